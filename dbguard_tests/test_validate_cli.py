"""`dbguard validate` as CI runs it: exit codes, formats, files, errors, imports, secrets, read-only."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import xml.etree.ElementTree as ET

import psycopg
import pytest

from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.pg.session import connect

from .conftest import SECRET, _as_user, run_sql
from .test_cli_foundation import assert_one_line_error, dbguard  # noqa: F401

DATA_PROBLEM = """
create table tenants (id uuid primary key);
insert into tenants values (md5('t1')::uuid);
create table notes (id int primary key, tenant_id uuid references tenants(id), title text);
insert into notes values (1, md5('t1')::uuid, 'a'), (2, null, null);
"""


@pytest.fixture
def problem_dsn(empty_dsn):
    run_sql(empty_dsn, DATA_PROBLEM)
    return empty_dsn


@pytest.mark.integration
def test_exit_codes_follow_fail_on(problem_dsn, tmp_path):
    found = dbguard("validate", "--dsn", problem_dsn, "--rule", "tenant_coverage", "--format", "json")
    assert found.returncode == 1, found.stderr
    assert json.loads(found.stdout)["summary"]["critical"] == 1
    clean = dbguard("validate", "--dsn", problem_dsn, "--rule", "orphaned_rows")
    assert clean.returncode == 0, clean.stderr
    # a table that cannot be measured: reported, fails --fail-on warning, not --fail-on critical
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("required_columns:\n  public.notes: [no_such_column]\n")
    args = ("validate", "--dsn", problem_dsn, "--config", str(cfg), "--rule", "null_violation")
    assert dbguard(*args).returncode == 0
    warn = dbguard(*args, "--fail-on", "warning")
    assert warn.returncode == 1 and "no_such_column" in warn.stdout
    # the same finding ignored by cache key: counted, and no longer fails the run
    cfg.write_text("ignore: ['tenant_coverage:public.notes:tenant_id']\n")
    ignored = dbguard(
        "validate", "--dsn", problem_dsn, "--config", str(cfg), "--rule", "tenant_coverage", "--format", "json"
    )
    assert ignored.returncode == 0 and json.loads(ignored.stdout)["summary"]["ignored"] == 1


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "junit"])
def test_out_writes_the_report_file(problem_dsn, tmp_path, fmt):
    out = tmp_path / "reports" / f"report.{fmt}"
    proc = dbguard("validate", "--dsn", problem_dsn, "--rule", "tenant_coverage", "--format", fmt, "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "" and "wrote" in proc.stderr and "1 critical" in proc.stderr
    body = out.read_text(encoding="utf-8")
    if fmt in ("json", "sarif"):
        json.loads(body)
    elif fmt == "junit":
        assert ET.fromstring(body.encode()).get("failures") == "1"
    else:
        assert "  public.notes: 1 of 2 rows have no tenant_id" in body and "\x1b" not in body


def test_usage_and_input_errors_exit_2_with_one_line(problem_dsn, tmp_path):
    assert_one_line_error(dbguard("validate", "--dsn", problem_dsn, "--rule", "no_such_rule"), "unknown rule id")
    bad = dbguard("validate", "--dsn", problem_dsn, "--format", "xml")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
    assert dbguard("validate", "--fail-on", "info", "--dsn", problem_dsn).returncode == 2
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("coverage_threshold: 150\n")
    assert_one_line_error(dbguard("validate", "--dsn", problem_dsn, "--config", str(cfg)), "coverage_threshold")
    assert_one_line_error(
        dbguard("validate", "--config", str(tmp_path / "missing.yaml"), "--dsn", problem_dsn), "config file not found"
    )
    assert_one_line_error(dbguard("validate", "--dsn", f"postgresql://app:{SECRET}@127.0.0.1:1/prod"), "cannot connect")
    assert_one_line_error(dbguard("validate", "--dsn", problem_dsn, "--out", str(tmp_path)), "is a directory")


@pytest.mark.security
def test_no_right_to_connect_is_exit_2(server_dsn, problem_dsn):
    dbname = parse_dsn(problem_dsn)["dbname"]
    run_sql(server_dsn, "drop role if exists dbguard_validate_noconn; create role dbguard_validate_noconn login")
    run_sql(problem_dsn, f'revoke connect on database "{dbname}" from public')
    proc = dbguard("validate", "--dsn", _as_user(server_dsn, "dbguard_validate_noconn", None, dbname))
    assert_one_line_error(proc, "permission denied")


def test_validate_does_not_import_dagster_pandas_or_great_expectations(problem_dsn, tmp_path):
    code = (
        "import json, sys\n"
        "from dbguard_pipeline.cli import main\n"
        f"rc = main(['validate', '--dsn', {problem_dsn!r}, '--format', 'json', '--out', {str(tmp_path / 'r.json')!r}])\n"
        "print(json.dumps([rc, sorted(m for m in ('dagster', 'pandas', 'great_expectations') if m in sys.modules)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rc, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 1 and heavy == []


@pytest.mark.security
def test_password_never_appears_in_any_format(server_dsn, password_role, demo_dsn, tmp_path):  # noqa: F811
    dbname = parse_dsn(demo_dsn)["dbname"]
    run_sql(
        demo_dsn,
        f"grant usage on schema auth to {password_role};"
        f"grant select on all tables in schema public, auth to {password_role};",
    )
    dsn = _as_user(server_dsn, password_role, SECRET, dbname)
    for fmt in ("text", "json", "sarif", "junit"):
        out = tmp_path / f"r.{fmt}"
        for extra in ((), ("--out", str(out))):
            proc = dbguard("validate", "--dsn", dsn, "--format", fmt, "--fail-on", "warning", *extra)
            assert proc.returncode in (0, 1), proc.stderr
            assert SECRET not in proc.stdout + proc.stderr
        body = out.read_text(encoding="utf-8")
        assert SECRET not in body and dbname in body
    # RLS tables are not readable by this role without BYPASSRLS: reported as not measured, no secret
    assert "row level security" in json.dumps(json.loads((tmp_path / "r.json").read_text())["not_measured"])
    wrong = dbguard("validate", "--dsn", _as_user(server_dsn, password_role, SECRET + "x", dbname))
    assert_one_line_error(wrong, "wrong user name or password")


@pytest.mark.security
@pytest.mark.integration
def test_a_select_only_role_gets_the_same_audit_and_nothing_changes(server_dsn, demo_dsn):
    """The audit needs no write right at all: a role with SELECT (and BYPASSRLS, to see every row) gets the
    same findings and coverage as the superuser, and the tables' write counters do not move."""
    dbname = parse_dsn(demo_dsn)["dbname"]
    run_sql(server_dsn, "drop role if exists dbguard_auditor; create role dbguard_auditor login bypassrls")
    run_sql(
        demo_dsn,
        "grant usage on schema auth to dbguard_auditor;"
        "grant select on all tables in schema public, auth to dbguard_auditor;",
    )
    stats = "select relname, n_tup_ins, n_tup_upd, n_tup_del from pg_stat_user_tables order by relname"
    with connect(demo_dsn) as conn:
        before = conn.execute(stats).fetchall()
    as_owner = json.loads(dbguard("validate", "--dsn", demo_dsn, "--format", "json").stdout)
    reader = _as_user(server_dsn, "dbguard_auditor", None, dbname)
    as_reader = json.loads(dbguard("validate", "--dsn", reader, "--format", "json").stdout)
    assert as_reader["not_measured"] == [] and as_reader["coverage"] == as_owner["coverage"]
    assert as_reader["findings"] == as_owner["findings"]
    with connect(demo_dsn) as conn:
        assert conn.execute(stats).fetchall() == before
    # and the role really cannot write
    with psycopg.connect(reader, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("delete from public.garages")
    run_sql(demo_dsn, "drop owned by dbguard_auditor")
    run_sql(server_dsn, "drop role dbguard_auditor")


def _on_a_terminal(args):
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.Popen(args, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.integration
def test_text_is_coloured_on_a_terminal_and_plain_when_piped(problem_dsn):
    args = [sys.executable, "-m", "dbguard_pipeline.cli", "validate", "--dsn", problem_dsn, "--rule", "tenant_coverage"]
    piped = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 1 and "\x1b[" not in piped.stdout and "✗ tenant_coverage (1)" in piped.stdout
    assert piped.stderr == ""  # no progress when standard error is not a terminal
    code, tty_out = _on_a_terminal(args)
    assert code == 1 and "\x1b[" in tty_out and "public.notes" in tty_out
    # --color overrides the detection both ways; --quiet is the count line alone, no progress
    always = subprocess.run([*args, "--color", "always"], capture_output=True, text=True, timeout=120)
    assert "\x1b[" in always.stdout
    code, never = _on_a_terminal([*args, "--color", "never", "--quiet"])
    assert code == 1 and "\x1b[" not in never
    assert never.strip().splitlines() == ["✗ 1 critical, ⚠ 0 warnings, ℹ 0 info  FAIL at --fail-on critical"]


def test_the_core_install_paths_never_import_the_extras():
    """What `pip install dbguard-rls` (no extras) must run: every CLI command and the pytest plugin load
    without dagster, pandas or great_expectations (the [dagster] and [gx] extras)."""
    code = (
        "import importlib, json, sys\n"
        "from dbguard_pipeline.cli import COMMANDS\n"
        "for module, _ in COMMANDS.values():\n"
        "    importlib.import_module('dbguard_pipeline.commands.' + module)\n"
        "import dbguard_pipeline.pytest_plugin, dbguard_pipeline.services, dbguard_pipeline.report\n"
        "import dbguard_pipeline.fixes.plan, dbguard_pipeline.fixes.ledger, dbguard_pipeline.probe\n"
        "print(json.dumps(sorted(m for m in ('dagster', 'pandas', 'great_expectations') if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_extras_hold_the_heavy_dependencies_and_make_installs_everything():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "dbguard-rls" and project["scripts"] == {"dbguard": "dbguard_pipeline.cli:run"}
    core = {d.split("==")[0].split("[")[0] for d in project["dependencies"]}
    assert not core & {"dagster", "dagster-webserver", "pandas", "great-expectations", "psycopg2-binary"}
    extras = project["optional-dependencies"]
    assert {d.split("==")[0] for d in extras["dagster"]} == {
        "dagster",
        "dagster-webserver",
        "dagster-postgres",
        "dagster-slack",
        "dagster-dg-cli",
    }
    assert {d.split("==")[0] for d in extras["gx"]} == {"great-expectations", "pandas", "psycopg2-binary"}

    def norm(name):  # PEP 503: great_expectations == great-expectations, PyYAML == pyyaml
        return name.split("[")[0].lower().replace("_", "-")

    lock = {
        norm(ln.split("==")[0]): ln.split("==")[1]
        for ln in (root / "requirements.lock").read_text().split()
        if "==" in ln
    }
    pinned = [d for d in extras["celery"] if "==" in d]  # (the celery extra also names the dagster extra)
    for dep in project["dependencies"] + extras["dagster"] + extras["gx"] + extras["test"] + pinned:  # make = the lock
        name, version = dep.split("==")
        assert lock[norm(name)] == version, dep
