"""The isolation probe on the demo database: leaks exactly where the demo planted them, witnesses that match
the data, the JSON shape of issue 5, and not a trace left behind."""

from __future__ import annotations

import json

import psycopg
import pytest

from dbguard_pipeline.config import Config
from dbguard_pipeline.probe import probe

from .isolation_helpers import fingerprint

USING_TRUE = {
    "profiles",
    "user_tenants",
    "vehicles",
    "vehicle_images",
    "photo_metadata",
    "capture_sessions",
    "vehicle_events",
    "event_photos",
    "vehicle_event_audit_logs",
}


@pytest.mark.security
@pytest.mark.integration
def test_demo_leaks_where_rls_is_off_or_using_true_and_nowhere_else(demo_dsn):
    report = probe(demo_dsn, Config())
    leaking = {q.split(".", 1)[1] for q in report.leaking_tables()}
    assert leaking == USING_TRUE | {"garages", "conversation_messages", "vehicle_overview"}
    # RLS off: every command leaks; USING (true) FOR SELECT: reads leak, writes are denied by default
    for table in ("garages", "conversation_messages"):
        assert {report.outcome(f"public.{table}", c)[0] for c in ("select", "insert", "update", "delete")} == {"leak"}
    for table in USING_TRUE:
        assert report.outcome(f"public.{table}", "select")[0] == "leak"
        assert {report.outcome(f"public.{table}", c)[0] for c in ("insert", "update", "delete")} == {"isolated"}
    for table in ("vision_accuracy", "vision_metrics", "vehicle_spec_enhancements", "conversations"):
        assert {report.outcome(f"public.{table}", c)[0] for c in ("select", "insert", "update", "delete")} == {
            "isolated"
        }, table
    assert report.not_probed == []
    assert "public.tenants" not in report.tables  # the root of the tenant model is not tenant data


@pytest.mark.security
def test_witness_counts_match_the_data(demo_dsn):
    report = probe(demo_dsn, Config(), ["public.vehicles", "conversation_messages"])
    b = report.tenant_context["tenant_b"]
    with psycopg.connect(demo_dsn) as conn:
        vehicles_b = conn.execute("select count(*) from public.vehicles where tenant_id = %s", (b,)).fetchone()[0]
        messages_b = conn.execute(
            "select count(*) from public.conversation_messages m join public.conversations c on c.id = m.conversation_id"
            " where c.tenant_id = %s",
            (b,),
        ).fetchone()[0]
        first_two = [r[0] for r in conn.execute("select id::text from public.tenants order by id limit 2")]
    assert [report.tenant_context["tenant_a"], b] == first_two
    (sel,) = [r for r in report.results if r.table == "vehicles" and r.probe == "select_other_tenant"]
    assert (
        sel.detail
        == f"as authenticated with tenant A, SELECT on public.vehicles returned {vehicles_b} rows of tenant B"
    )
    assert sel.rows == vehicles_b > 0
    (msg,) = [r for r in report.results if r.table == "conversation_messages" and r.probe == "select_other_tenant"]
    assert msg.rows == messages_b > 0


def test_json_has_the_shape_of_the_issue(demo_dsn):
    report = probe(demo_dsn, Config(), ["garages", "vision_metrics"])
    data = json.loads(report.to_json())
    assert {"database", "tenant_context", "app_role", "results", "summary"} <= set(data)
    assert data["app_role"] == "authenticated"
    assert data["tenant_context"]["setting"] == "app.current_tenant_id"
    assert {k: data["summary"][k] for k in ("tables", "leaks")} == {"tables": 2, "leaks": 9}
    for r in data["results"]:
        assert {"schema", "table", "command", "isolated", "detail"} <= set(r)
        assert r["command"] in ("select", "insert", "update", "delete")
        assert isinstance(r["isolated"], bool)
    moves = [r for r in data["results"] if r["probe"].startswith("move_row")]
    assert moves and {r["command"] for r in moves} == {"update"}
    assert all(r["isolated"] for r in data["results"] if r["table"] == "vision_metrics")
    assert len([r for r in data["results"] if r["table"] == "vision_metrics"]) == 9


@pytest.mark.security
def test_probe_leaves_no_trace_rows_checksums_sequences_catalog(demo_dsn):
    before = fingerprint(demo_dsn)
    report = probe(demo_dsn, Config())
    assert report.leaks  # it did write: garages accepted INSERT, UPDATE and DELETE of tenant B's rows
    assert fingerprint(demo_dsn) == before
    with psycopg.connect(demo_dsn) as conn:  # and left no session, transaction or lock behind
        others = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert others == 0
