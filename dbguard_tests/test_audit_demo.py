"""The audit of the demo database matches docs/demo.md: findings, coverage, data integrity, the report."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dbguard_pipeline.audit import run_audit
from dbguard_pipeline.commands.demo import report_audit
from dbguard_pipeline.config import Config
from dbguard_pipeline.report import render

from .conftest import run_sql
from .test_cli_foundation import dbguard

DOC = Path(__file__).resolve().parents[1] / "docs" / "demo.md"
USING_TRUE_TABLES = {
    "capture_sessions",
    "event_photos",
    "photo_metadata",
    "profiles",
    "user_tenants",
    "vehicle_event_audit_logs",
    "vehicle_events",
    "vehicle_images",
    "vehicles",
}


def documented_findings() -> set[tuple[str, str]]:
    """(severity, cache key) rows of the "Expected findings" table of docs/demo.md."""
    section = DOC.read_text(encoding="utf-8").split("## Expected findings", 1)[1].split("\n## ", 1)[0]
    return {
        (m.group(1), m.group(2)) for m in re.finditer(r"^\| (critical|warning|info) \| `([^`]+)` \|$", section, re.M)
    }


def documented_report() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("## The report", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return block.rstrip("\n").splitlines()


def skeleton(lines: list[str]) -> list[str]:
    """What must match line for line: section headings, coverage lines, the symbol + table + [rule] of each
    finding, ok lines and the count line. Message wording may evolve; the content may not."""
    out = []
    for line in lines[1:]:  # the header line carries the database name, server version and time
        m = re.match(r"^  ([✓✗⚠ℹ]) (\S+): .*?(\[[a-z_]+\])?$", line)
        if line.strip().startswith("fix:"):
            continue
        if m and m.group(3):
            out.append(f"{m.group(1)} {m.group(2)} {m.group(3)}")
        else:
            out.append(line)
    return out


@pytest.fixture
def demo_result(demo_dsn):
    return run_audit(demo_dsn, Config())


@pytest.mark.integration
def test_demo_findings_are_exactly_the_documented_ones(demo_result):
    expected = documented_findings()
    assert len(expected) == 15
    assert {(f.severity.value, f.cache_key) for f in demo_result.findings} == expected
    assert demo_result.summary() == {"critical": 2, "warning": 12, "info": 1, "ignored": 0}
    critical = [f for f in demo_result.findings if f.severity.value == "critical"]
    assert [(f.rule, f.table) for f in critical if f.category == "rls"] == [
        ("rls_disabled_with_tenant_column", "garages")
    ]
    weak = {f.table for f in demo_result.findings if f.rule == "weak_rls_policy"}
    assert weak == USING_TRUE_TABLES and all(
        f.severity.value == "warning" for f in demo_result.findings if f.rule == "weak_rls_policy"
    )
    assert not [f for f in demo_result.findings if f.table in ("vision_accuracy", "vision_metrics")]
    assert demo_result.exit_code("critical") == 1 and demo_result.not_measured == ()


@pytest.mark.integration
def test_demo_data_is_fully_covered_without_orphans_or_cross_tenant_rows(demo_result):
    cov = {c.table: c for c in demo_result.coverage}
    assert len(cov) == 14 and "conversation_messages" not in cov and "tenants" not in cov
    assert all(c.percent == 100.0 and c.rows == c.with_tenant and not c.estimated for c in cov.values())
    assert (cov["vehicles"].rows, cov["vehicle_images"].rows) == (22, 25)
    metrics = demo_result.metrics
    assert all(v == 0 for m in metrics.values() for v in list(m.orphans.values()) + list(m.cross_tenant.values()))
    assert sum(len(m.cross_tenant) for m in metrics.values()) == 10
    assert metrics["public.vehicle_spec_enhancements"].orphans == {"tenant_id": 0}
    assert not {f.rule for f in demo_result.findings} & {
        "tenant_coverage",
        "orphaned_rows",
        "cross_tenant_reference",
        "null_violation",
    }


@pytest.mark.integration
def test_demo_text_report_matches_the_documented_report(demo_result):
    text = render(demo_result, "text", color=False).rstrip("\n").splitlines()
    assert text[0].startswith(f"dbguard validate: {demo_result.database} (PostgreSQL ")
    documented_header = re.sub(r"PostgreSQL [\d.]+( \([^)]*\))?", "", documented_report()[0]).split(":", 1)[1]
    assert re.sub(r"PostgreSQL [\d.]+( \([^)]*\))?", "", text[0]).split(":", 1)[1] == documented_header.replace(
        "dbguard_demo", demo_result.database
    )  # tables and rules counted as documented
    assert skeleton(text) == skeleton(documented_report())


@pytest.mark.integration
def test_the_demo_report_is_the_audit_at_fail_on_critical(demo_dsn, capsys):
    assert report_audit(demo_dsn) == 1
    out = capsys.readouterr().out
    assert "✗ public.garages:" in out and out.count("[weak_rls_policy]") == 9
    assert out.rstrip().endswith("FAIL at --fail-on critical")


@pytest.mark.integration
def test_fixing_the_criticals_in_sql_makes_the_demo_pass(demo_dsn):
    """The loop of the original tool, by hand: fix garages and conversation_messages, audit again."""
    ctx = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
    run_sql(
        demo_dsn,
        f"""
        alter table public.garages enable row level security;
        create policy garages_tenant_isolation on public.garages for all to authenticated
            using (tenant_id = {ctx}) with check (tenant_id = {ctx});
        alter table public.conversation_messages add column tenant_id uuid references public.tenants(id);
        update public.conversation_messages m set tenant_id = c.tenant_id
            from public.conversations c where c.id = m.conversation_id;
        alter table public.conversation_messages alter column tenant_id set not null;
        create index on public.conversation_messages (tenant_id);
        alter table public.conversation_messages enable row level security;
        create policy conversation_messages_tenant_isolation on public.conversation_messages for all
            to authenticated using (tenant_id = {ctx}) with check (tenant_id = {ctx});
    """,
    )
    result = run_audit(demo_dsn, Config())
    assert result.summary()["critical"] == 0 and result.exit_code("critical") == 0
    assert result.exit_code("warning") == 1
    assert "garages" not in {f.table for f in result.findings if f.category == "rls"}
    cov = {c.table: c for c in result.coverage}
    assert cov["conversation_messages"].percent == 100.0 and cov["conversation_messages"].rows == 30
    # the new child -> parent reference between tenant tables is checked, and clean
    assert result.metrics["public.conversation_messages"].cross_tenant == {
        "conversation_messages_conversation_id_fkey": 0
    }


@pytest.mark.integration
def test_demo_exits_0_and_serve_keeps_the_server_for_the_other_commands(tmp_path):
    env = {**os.environ, "DBGUARD_HOME": str(tmp_path / "home")}
    env.pop("DBGUARD_DATABASE_URL", None)
    # nothing running: --print-dsn refuses (it never starts, loads or reloads anything)
    none = dbguard("demo", "--print-dsn", env=env)
    assert none.returncode == 2 and "dbguard demo --serve" in none.stderr and not none.stdout
    demo = dbguard("demo", env=env, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "FAIL at --fail-on critical" in demo.stdout and "error" not in demo.stderr.lower()
    serve = subprocess.Popen(
        [sys.executable, "-m", "dbguard_pipeline.cli", "demo", "--serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = serve.stdout.readline().strip()
        assert url.startswith("postgresql://"), serve.stderr.read() if serve.poll() is not None else url
        run_sql(url, "create table public.kept_between_commands (id int)")  # --print-dsn must not reload
        printed = dbguard("demo", "--print-dsn", env=env)
        assert printed.returncode == 0 and printed.stdout.strip() == url
        validate = dbguard("validate", "--format", "json", env={**env, "DBGUARD_DATABASE_URL": url})
        assert validate.returncode == 1 and '"database": "dbguard_demo"' in validate.stdout, validate.stderr
        run_sql(url, "select from public.kept_between_commands")  # still there: nothing was reloaded
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert "demo server stopped" in serve.stderr.read()
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()
    assert dbguard("demo", "--print-dsn", env=env).returncode == 2
