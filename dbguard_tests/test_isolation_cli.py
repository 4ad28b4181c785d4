"""`dbguard test-isolation` as CI runs it: exit codes, formats, files, one-line errors, no password anywhere,
and the whole loop: the demo leaks, the generated fixes are applied, the probe finds nothing."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from psycopg import conninfo

from dbguard_pipeline.cli import main
from dbguard_pipeline.pg.dsn import parse_dsn

from .conftest import SECRET, _as_user
from .isolation_helpers import APP, GUC_STYLES_SQL, ROLES_SQL, TENANTS_SQL, scratch_database


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["test-isolation", *args])
    out, err = capsys.readouterr()
    return code, out, err


def with_password(dsn: str, password: str = SECRET) -> str:
    """The same database and superuser, with a password in the URL (the test server trusts local sockets,
    so it is accepted and ignored: what matters is that it is never printed)."""
    params = parse_dsn(dsn)
    params["password"] = password
    return conninfo.make_conninfo(**params)


@pytest.fixture(scope="module")
def styles_dsn(server_dsn):
    with scratch_database(server_dsn, GUC_STYLES_SQL) as dsn:
        yield dsn


@pytest.fixture
def app_config(tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(f"tenant:\n  app_role: {APP}\n")
    return str(cfg)


@pytest.mark.integration
def test_demo_leaks_exit_1_with_the_issue_json(capsys, demo_dsn):
    code, out, err = run_cli(capsys, "--dsn", demo_dsn, "--format", "json")
    assert code == 1, err
    data = json.loads(out)
    assert data["summary"]["leaks"] > 0 and data["summary"]["tables"] == 16
    assert data["database"].endswith("/" + parse_dsn(demo_dsn)["dbname"])
    assert {r["table"] for r in data["results"] if not r["isolated"]} >= {"garages", "conversation_messages"}


def test_safe_tables_exit_0_and_text_names_every_command(capsys, demo_dsn):
    code, out, err = run_cli(capsys, "--dsn", demo_dsn, "--table", "vision_metrics", "public.vision_accuracy")
    assert code == 0, err
    assert "public.vision_metrics" not in out  # passing relations are counted, listed only with --verbose
    assert "0 relations with problems, 2 isolated (--verbose lists them)" in out
    assert "PASS 2 relations, 18 probes: 0 leaks in 0 relations, 0 not probed" in out.splitlines()[2]
    code, out, err = run_cli(capsys, "--dsn", demo_dsn, "--table", "vision_metrics", "public.vision_accuracy", "-v")
    assert code == 0, err
    assert "public.vision_metrics   ok          ok          ok          ok" in out


@pytest.mark.integration
def test_text_summary_first_problems_grouped_by_table_or_command(capsys, demo_dsn, tmp_path):
    tables = ("--table", "garages", "vehicles", "vision_metrics", "vehicle_overview")
    code, out, err = run_cli(capsys, "--dsn", demo_dsn, *tables)
    assert code == 1, err
    lines = out.splitlines()
    summary = "FAIL 4 relations, 29 probes: 13 leaks in 3 relations, 0 not probed"
    assert lines[2].startswith(summary) and lines[-1].startswith(summary)
    assert lines[3] == "3 relations with problems, 1 isolated (--verbose lists them)"
    assert "vision_metrics" not in out
    heads = [ln for ln in lines if ln[:1] in ("✗", "[") and "public." in ln]
    # worst first, then probe order; a note every witness of the relation shares is said once in its header
    assert heads == [
        "✗ public.garages: 9 leaks (row level security is disabled on this table)",
        "✗ public.vehicles: 2 leaks",
        "✗ public.vehicle_overview: 2 leaks",
    ]
    garages = lines.index(heads[0])
    assert lines[garages + 1].startswith("    LEAK select (select_without_context): as authenticated")
    assert not lines[garages + 1].endswith("(row level security is disabled on this table)")
    # by command
    code, out, _ = run_cli(capsys, "--dsn", demo_dsn, *tables, "--group-by", "command")
    heads = [ln for ln in out.splitlines() if ln.startswith("✗ ")]
    assert heads == [
        "✗ SELECT: 6 leaks in 3 relations",
        "✗ INSERT: 1 leak in 1 relation",
        "✗ UPDATE: 4 leaks in 1 relation",
        "✗ DELETE: 2 leaks in 1 relation",
    ]
    assert "    LEAK public.vehicles (select_other_tenant): as authenticated with tenant A" in out
    # --verbose: the full grid, passing relations included
    code, out, _ = run_cli(capsys, "--dsn", demo_dsn, *tables, "--verbose")
    assert "Every relation (4):" in out and "public.vision_metrics    ok          ok          ok          ok" in out
    assert "public.vehicle_overview  LEAK        -           -           -" in out
    # colour: LEAK in red only when asked (or on a terminal); never in a file unless --color always
    code, out, _ = run_cli(capsys, "--dsn", demo_dsn, *tables, "--color", "always")
    assert "\x1b[1;31mLEAK\x1b[0m" in out
    code, out, _ = run_cli(capsys, "--dsn", demo_dsn, *tables, "--color", "never")
    assert "\x1b[" not in out
    code, _, _ = run_cli(capsys, "--dsn", demo_dsn, *tables, "--out", str(tmp_path / "r.txt"))
    assert "\x1b[" not in (tmp_path / "r.txt").read_text()


@pytest.mark.integration
def test_junit_out_file_has_one_named_case_per_table_and_command(capsys, demo_dsn, tmp_path):
    out_file = tmp_path / "reports" / "isolation.xml"
    code, out, err = run_cli(
        capsys, "--dsn", demo_dsn, "--table", "garages", "vision_metrics", "--format", "junit", "--out", str(out_file)
    )
    assert code == 1 and out == ""
    assert f"wrote {out_file}: 2 relations, 18 probes, 9 leaks in 1 relations, 0 not probed" in err
    suite = ET.parse(out_file).getroot()
    names = [tc.get("name") for tc in suite.iter("testcase")]
    assert names == [
        f"test_isolation[public.{t}-{c}]"
        for t in ("garages", "vision_metrics")
        for c in ("select", "insert", "update", "delete")
    ]
    assert suite.get("failures") == "4" and suite.get("tests") == "8"
    failure = suite.find("testcase[@name='test_isolation[public.garages-select]']/failure")
    assert "SELECT on public.garages returned" in failure.get("message")


def test_usage_errors_exit_2_in_one_line(capsys, demo_dsn, server_dsn):
    code, out, err = run_cli(capsys, "--dsn", demo_dsn, "--table", "nope")
    assert code == 2 and err.strip().count("\n") == 0
    assert err.startswith("dbguard test-isolation: error: table not found in") and "nope" in err
    code, _, err = run_cli(capsys, "--dsn", demo_dsn, "--tenant-a", "x")
    assert code == 2 and "give both --tenant-a and --tenant-b" in err
    code, _, err = run_cli(capsys, "--dsn", "postgresql://nobody@127.0.0.1:1/nowhere")
    assert code == 2 and err.startswith("dbguard test-isolation: error: cannot connect to nobody@127.0.0.1:1/nowhere")
    with pytest.raises(SystemExit) as exc:
        main(["test-isolation", "--format", "yaml"])
    assert exc.value.code == 2


@pytest.mark.security
def test_superuser_app_role_is_refused_from_the_cli(capsys, styles_dsn, tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    superuser = parse_dsn(styles_dsn).get("user")
    cfg.write_text(f"tenant:\n  app_role: {superuser}\n")
    code, out, err = run_cli(capsys, "--dsn", styles_dsn, "--config", str(cfg))
    assert code == 2 and out == ""
    assert err == (
        f"dbguard test-isolation: error: refusing to probe as {superuser}: it is a superuser, and row level "
        f"security never applies to superusers, so the probes would prove nothing; set tenant.app_role to "
        f"the role the application's queries run as\n"
    )


@pytest.mark.security
@pytest.mark.parametrize("fmt", ["text", "json", "junit"])
def test_no_password_in_any_output(capsys, styles_dsn, app_config, fmt, tmp_path):
    dsn = with_password(styles_dsn)
    out_file = tmp_path / f"report.{fmt}"
    code, out, err = run_cli(capsys, "--dsn", dsn, "--config", app_config, "--format", fmt)
    assert code == 1, err  # it ran: the style tables leak
    assert SECRET not in out + err
    code, out, err = run_cli(capsys, "--dsn", dsn, "--config", app_config, "--format", fmt, "--out", str(out_file))
    assert SECRET not in out + err + out_file.read_text()
    code, out, err = run_cli(capsys, "--dsn", dsn, "--config", app_config, "--table", "no_such_table")
    assert code == 2 and SECRET not in out + err


@pytest.mark.security
def test_password_login_without_rights_is_refused_without_echoing_it(
    capsys, server_dsn, password_role, styles_dsn, app_config
):
    dsn = _as_user(server_dsn, password_role, SECRET, parse_dsn(styles_dsn)["dbname"])
    code, out, err = run_cli(capsys, "--dsn", dsn, "--config", app_config)
    assert code == 2
    assert f"connected as {password_role}, which is neither a superuser nor BYPASSRLS" in err
    assert SECRET not in out + err


def test_strict_turns_not_probed_into_a_failure(capsys, server_dsn, app_config):
    ddl = (
        ROLES_SQL
        + TENANTS_SQL
        + f"""
    CREATE TABLE public.shapes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
                                at point NOT NULL);
    GRANT SELECT, INSERT, UPDATE, DELETE ON public.shapes TO {APP};
    """
    )
    with scratch_database(server_dsn, ddl) as dsn:
        code, out, _ = run_cli(capsys, "--dsn", dsn, "--config", app_config)
        assert code == 0 and "not probed: " in out and "9 not probed" in out
        code, _, _ = run_cli(capsys, "--dsn", dsn, "--config", app_config, "--strict")
        assert code == 1


@pytest.mark.integration
@pytest.mark.security
def test_after_the_generated_fixes_are_applied_no_probe_leaks(capsys, demo_dsn, tmp_path):
    mig = tmp_path / "migrations"
    assert main(["generate-migration", "--all", "--out-dir", str(mig), "--dsn", demo_dsn, "--no-test"]) == 0
    assert main(["migrate", "up", "--dir", str(mig), "--dsn", demo_dsn]) == 0
    capsys.readouterr()
    code, out, err = run_cli(capsys, "--dsn", demo_dsn, "--format", "json")
    data = json.loads(out)
    assert code == 0, [r["detail"] for r in data["results"] if not r["isolated"]]
    assert data["summary"]["leaks"] == 0 and data["summary"]["not_probed"] == 0
    assert data["summary"]["tables"] == 16  # nothing was dropped from the probe to get there


@pytest.mark.integration
def test_the_text_example_in_docs_is_the_demo_output(capsys, demo_dsn):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "isolation.md").read_text(encoding="utf-8")
    block = doc.split('$ dbguard test-isolation --dsn "$DATABASE_URL"\n', 1)[1].split("```", 1)[0]
    _, out, _ = run_cli(capsys, "--dsn", demo_dsn)
    seconds = re.compile(r"\(\d+\.\d+ s;")
    real = {seconds.sub("(s;", ln) for ln in out.splitlines()}
    shown = [ln for ln in block.splitlines()[2:] if ln and ln != "…"]
    assert len(shown) > 10
    missing = [ln for ln in shown if seconds.sub("(s;", ln) not in real]
    assert not missing, f"docs/isolation.md shows lines the demo does not print: {missing}"


@pytest.mark.integration
def test_relations_that_fail_alike_are_listed_once(capsys, demo_dsn):
    _, out, _ = run_cli(capsys, "--dsn", demo_dsn)
    lines = out.splitlines()
    head = lines.index("✗ 10 relations, each: 2 leaks")
    assert lines[head + 1] == "    e.g. public.capture_sessions:"
    listed = " ".join(lines[lines.index("  on 10 relations:", head) + 1 :][:3])
    assert all(f"public.{t}" in listed for t in ("profiles", "vehicles", "vehicle_overview", "user_tenants"))
    assert sum(ln.startswith("    LEAK") for ln in lines) == 2 + 10 + 9  # one witness set per group
    _, out, _ = run_cli(capsys, "--dsn", demo_dsn, "--group-by", "command")
    assert (
        "    LEAK select_without_context on 12 relations, e.g. public.capture_sessions: as authenticated with no "
        "tenant context, SELECT on public.capture_sessions returned 12 rows" in out
    )
    assert "    LEAK public.garages (insert_for_other_tenant): " in out  # two relations: each on its own line
