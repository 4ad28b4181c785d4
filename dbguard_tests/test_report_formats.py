"""The CI formats and adoption aids of `dbguard validate`: github annotations, markdown, baselines, the
grouped text report, config discovery."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from psycopg import sql

from dbguard_pipeline.audit import run_audit
from dbguard_pipeline.config import Config
from dbguard_pipeline.report import render
from dbguard_pipeline.report.github import escape_data, escape_property

from .conftest import run_sql
from .test_cli_foundation import assert_one_line_error, dbguard

HOSTILE = "x|y`z <b>\n::error title=forged::pwned,%0A"


@pytest.fixture
def hostile_dsn(demo_dsn):
    run_sql(
        demo_dsn,
        sql.SQL("create table public.{t} (id int primary key, tenant_id uuid references public.tenants(id))")
        .format(t=sql.Identifier(HOSTILE))
        .as_string(None),
    )
    return demo_dsn


def test_github_annotations_one_per_finding_and_no_injection(hostile_dsn):
    result = run_audit(hostile_dsn, Config())
    out = render(result, "github")
    lines = out.splitlines()
    commands = [ln for ln in lines if ln.startswith("::")]
    assert len(commands) == len(result.findings) and lines[-1].startswith("dbguard validate ")
    assert (
        sum(
            ln.startswith("::error title=dbguard rls_disabled_with_tenant_column%3A public.garages::")
            for ln in commands
        )
        == 1
    )
    assert sum(ln.startswith("::warning ") for ln in commands) == 12 + sum(
        1 for f in result.findings if f.severity.value == "warning" and HOSTILE in f.table
    )
    # the hostile name never starts a line, and never closes the title property
    assert not [
        ln
        for ln in lines
        if "forged" in ln
        and not ln.startswith(("::error title=dbguard", "::warning title=dbguard", "::notice title=dbguard"))
    ]
    for ln in commands:
        assert re.fullmatch(r"::(error|warning|notice) title=[^:,]*::.*", ln), ln
    assert "fix%3A" not in out and "%0Afix: dbguard generate-migration" in out
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A" and escape_data("a:b\r\n") == "a:b%0D%0A"


def test_markdown_is_a_table_per_severity_and_escapes_names(hostile_dsn):
    result = run_audit(hostile_dsn, Config())
    md = render(result, "markdown", config_source="dbguard.yaml")
    assert md.startswith("## dbguard validate: ") and "❌ **FAIL** at `--fail-on critical`" in md
    n_critical = sum(1 for f in result.findings if f.severity.value == "critical")
    assert f"### 🔴 Critical ({n_critical})" in md and "### 🟠 Warnings (" in md and "### 🔵 Info (" in md
    assert "config: <code>dbguard.yaml</code>" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| <code>")]
    assert len(rows) == len(result.findings)
    for row in rows:  # four cells each: no unescaped pipe from a name or a message
        assert len(re.findall(r"(?<!\\)\|", row)) == 5, row
    assert "<b>" not in md and "&lt;b&gt;" in md and "`z" not in md


def test_baseline_accepts_todays_findings_and_fails_only_on_new_ones(demo_dsn, tmp_path):
    base = tmp_path / "baseline.json"
    first = dbguard("validate", "--dsn", demo_dsn, "--write-baseline", str(base))
    assert first.returncode == 1 and f"wrote baseline {base}" in first.stderr
    data = json.loads(base.read_text())
    assert data["dbguard_baseline"] == 1 and len(data["findings"]) == 15
    assert dbguard("validate", "--dsn", demo_dsn, "--write-baseline", str(base)).returncode == 1
    assert json.loads(base.read_text()) == data  # same findings, same bytes (no clock time)

    accepted = dbguard("validate", "--dsn", demo_dsn, "--baseline", str(base), "--fail-on", "warning")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "baseline" in accepted.stderr and "15 accepted, 0 new" in accepted.stderr
    assert "15 ignored" in accepted.stdout

    # a new problem fails, the accepted ones still do not; a fixed one is reported as gone
    run_sql(
        demo_dsn,
        "alter table public.vision_metrics disable row level security;"
        "alter table public.garages enable row level security;"
        "create policy g on public.garages using (tenant_id = (select nullif(current_setting("
        "'app.current_tenant_id', true), '')::uuid)) with check (tenant_id = (select nullif("
        "current_setting('app.current_tenant_id', true), '')::uuid))",
    )
    new = dbguard("validate", "--dsn", demo_dsn, "--baseline", str(base), "--format", "json")
    assert new.returncode == 1
    keys = [f["cache_key"] for f in json.loads(new.stdout)["findings"]]
    assert set(keys) == {
        "rls_disabled_with_tenant_column:public.vision_metrics",
        "policy_exists_rls_disabled:public.vision_metrics",
    }
    assert "1 fixed since" in new.stderr

    # a json report is a baseline too, and so is a SARIF report
    for fmt in ("json", "sarif"):
        report = tmp_path / f"report.{fmt}"
        dbguard("validate", "--dsn", demo_dsn, "--format", fmt, "--out", str(report))
        again = dbguard("validate", "--dsn", demo_dsn, "--baseline", str(report), "--fail-on", "warning")
        assert again.returncode == 0, (fmt, again.stdout)


def test_bad_baselines_are_one_line_errors_before_connecting(tmp_path):
    bad = tmp_path / "b.json"
    dsn = "postgresql://nobody@127.0.0.1:1/none"
    assert_one_line_error(
        dbguard("validate", "--dsn", dsn, "--baseline", str(tmp_path / "missing.json")), "baseline file not found"
    )
    bad.write_text("{not json")
    assert_one_line_error(dbguard("validate", "--dsn", dsn, "--baseline", str(bad)), "is not valid JSON")
    bad.write_text('{"hello": 1}')
    assert_one_line_error(dbguard("validate", "--dsn", dsn, "--baseline", str(bad)), "neither a baseline")
    bad.write_text('{"dbguard_baseline": 1, "findings": [{"rule": "x"}]}')
    assert_one_line_error(dbguard("validate", "--dsn", dsn, "--baseline", str(bad)), "without a cache_key")


def test_grouped_text_summary_first_by_rule_or_table_verbose_lists_passing(demo_dsn):
    result = run_audit(demo_dsn, Config())
    text = render(result, "text", color=False, group_by="rule").splitlines()
    assert text[1] == "✗ 2 critical, ⚠ 12 warnings, ℹ 1 info  FAIL at --fail-on critical" == text[-1]
    assert text[2] == "13 tables with findings, 3 without (--verbose lists them)"
    heads = [ln for ln in text if re.match(r"^\S+ [a-z_]+ \(\d+\)", ln)]
    assert [h.split()[1] for h in heads][:3] == [
        "missing_tenant_column",
        "rls_disabled_with_tenant_column",
        "weak_rls_policy",
    ]
    assert "⚠ weak_rls_policy (9): " in "\n".join(heads)
    # the fix every weak policy shares is printed once, each table is one line
    assert text.count("    fix: dbguard generate-migration fix-rls-policy TABLE") == 1
    assert "vision_metrics" not in "\n".join(text)
    verbose = render(result, "text", color=False, group_by="rule", verbose=True)
    assert "Without finding (3):" in verbose and "  ✓ public.vision_metrics 100.0% tenant coverage" in verbose
    by_table = render(result, "text", color=False, group_by="table").splitlines()
    assert "✗ public.garages (1)" in by_table and "⚠ public.conversations (2)" in by_table


def test_config_is_found_upwards_and_named_in_the_report(problem_config_dsn, tmp_path):
    (tmp_path / "dbguard.yaml").write_text("coverage_threshold: 40\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    env = {k: v for k, v in __import__("os").environ.items() if k != "DBGUARD_CONFIG"}
    args = [
        sys.executable,
        "-m",
        "dbguard_pipeline.cli",
        "validate",
        "--dsn",
        problem_config_dsn,
        "--rule",
        "tenant_coverage",
    ]
    env["PYTHONPATH"] = __import__("os").pathsep.join(sys.path)
    found = subprocess.run(args, cwd=sub, capture_output=True, text=True, env=env, timeout=120)
    assert found.returncode == 0, found.stdout + found.stderr  # 50% coverage passes the 40% threshold
    assert f"config {tmp_path / 'dbguard.yaml'}" in found.stdout.splitlines()[0]
    (tmp_path / "a" / "dbguard.yml").write_text("coverage_threshold: 100\n")  # the nearest one wins
    nearer = subprocess.run(args, cwd=sub, capture_output=True, text=True, env=env, timeout=120)
    assert nearer.returncode == 1 and f"config {tmp_path / 'a' / 'dbguard.yml'}" in nearer.stdout
    as_json = subprocess.run([*args, "--format", "json"], cwd=sub, capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(as_json.stdout)["config"] == str(tmp_path / "a" / "dbguard.yml")


@pytest.fixture
def problem_config_dsn(empty_dsn):
    run_sql(
        empty_dsn,
        """
        create table tenants (id uuid primary key);
        insert into tenants values (md5('t1')::uuid);
        create table notes (id int primary key, tenant_id uuid references tenants(id));
        insert into notes values (1, md5('t1')::uuid), (2, null);
    """,
    )
    return empty_dsn
