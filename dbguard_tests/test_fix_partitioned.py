"""add-tenant-isolation on a partitioned child without tenant column (issue 11): PostgreSQL refuses NOT VALID
foreign keys and CREATE INDEX CONCURRENTLY on a partitioned table, so the migration gives each partition its
own NOT VALID key (validated without blocking writes) and adds the parent's key afterwards, which attaches
them without a scan; the index goes ON ONLY the parent, concurrently on each partition, then ATTACH; every
partition the app role can query gets RLS and the policy. Round trip and rollback exact, probe clean after."""

from __future__ import annotations

import psycopg
import pytest

from dbguard_pipeline import services
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.model.equality import same_schema

from .conftest import run_sql
from .test_fix_loop import BREWERY, repro_file

CHILD = """
create table public.gravity_logs (
  id bigint not null,
  batch_id bigint not null references public.batches (id),
  logged_on date not null,
  sg numeric not null,
  primary key (id, logged_on)) partition by range (logged_on);
create table public.gravity_logs_2026 partition of public.gravity_logs for values from ('2026-01-01') to ('2027-01-01');
create table public.gravity_logs_2027 partition of public.gravity_logs for values from ('2027-01-01') to ('2028-01-01');
create index on public.gravity_logs (batch_id);
alter table public.gravity_logs enable row level security;
create policy gravity_via_batch on public.gravity_logs for all to brew_app
  using (exists (select 1 from public.batches b where b.id = batch_id))
  with check (exists (select 1 from public.batches b where b.id = batch_id));
insert into public.gravity_logs
  select row_number() over (), b.id, date '2026-06-01' + g * 9, 1.05 from public.batches b, generate_series(1, 50) g;
grant select, insert, update, delete on public.gravity_logs, public.gravity_logs_2026, public.gravity_logs_2027 to brew_app;
"""
ROWS = "select md5(string_agg(t::text, ',' order by id, logged_on)) from public.gravity_logs t"
TABLES = ["public.gravity_logs", "public.gravity_logs_2026", "public.gravity_logs_2027"]


def _leaks(dsn: str) -> list[str]:
    report = services.probe(dsn, BREWERY, TABLES)
    return [f"{r.qualified} {r.probe}" for r in report.leaks]


@pytest.mark.integration
def test_partitioned_child_round_trip_and_rollback(databases, tmp_path):
    dsn = databases.create()
    run_sql(dsn, repro_file("brewery", "common").read_text() + CHILD)
    before = services.introspect(dsn, BREWERY)
    with psycopg.connect(dsn) as conn:
        rows_before = conn.execute(ROWS).fetchone()[0]
    assert _leaks(dsn)  # the partitions have no RLS: the app reads every tenant's rows through them
    out = tmp_path / "m"
    fixes = services.generate_fixes(
        dsn,
        BREWERY,
        action="add-tenant-isolation",
        table="public.gravity_logs",
        out_dir=str(out),
        round_trip="yes",
        timestamp="20260101000000",
    )
    assert fixes.rejected == [] and len(fixes.written) == 2, [m.rejected for m in fixes.rejected]
    forward = fixes.written[0].read_text()
    assert 'ALTER TABLE "public"."gravity_logs_2026" ADD CONSTRAINT "gravity_logs_tenant_id_fkey"' in forward
    assert 'ON ONLY "public"."gravity_logs"' in forward and "ATTACH PARTITION" in forward

    services.migrator(dsn, out).up()
    with psycopg.connect(dsn) as conn:
        fks = conn.execute(
            "select conrelid::regclass::text, convalidated from pg_constraint "
            "where conname = 'gravity_logs_tenant_id_fkey' order by 1"
        ).fetchall()
        assert fks == [("gravity_logs", True), ("gravity_logs_2026", True), ("gravity_logs_2027", True)]
        assert conn.execute(
            "select indisvalid from pg_index where indexrelid = 'public.gravity_logs_tenant_id_idx'::regclass"
        ).fetchone()[0]
        assert conn.execute(
            "select bool_and(attnotnull) from pg_attribute where attname = 'tenant_id' and attrelid in "
            "('public.gravity_logs'::regclass, 'public.gravity_logs_2026'::regclass, 'public.gravity_logs_2027'::regclass)"
        ).fetchone()[0]
        assert conn.execute(
            "select bool_and(relrowsecurity) from pg_class where relname like 'gravity_logs%' and relkind in ('r', 'p')"
        ).fetchone()[0]
        wrong = conn.execute(
            "select count(*) from public.gravity_logs g join public.batches b on b.id = g.batch_id "
            "where g.tenant_id is distinct from b.tenant_id"
        ).fetchone()[0]
        assert wrong == 0
    assert _leaks(dsn) == []
    findings = services.static_audit(services.introspect(dsn, BREWERY), BREWERY).findings
    assert not [f.cache_key for f in findings if f.table.startswith("gravity_logs") and f.severity.value != "info"]

    services.migrator(dsn, out).rollback("20260101000000_add_tenant_isolation_gravity_logs")
    assert same_schema(before, services.introspect(dsn, BREWERY), exclude_schemas=("dbguard",))
    with psycopg.connect(dsn) as conn:
        assert conn.execute(ROWS).fetchone()[0] == rows_before


@pytest.mark.integration
def test_partitioned_child_without_primary_key_is_refused(databases, tmp_path):
    dsn = databases.create()
    run_sql(
        dsn,
        repro_file("brewery", "common").read_text()
        + """create table public.pings (batch_id bigint not null references public.batches (id), at date not null)
               partition by range (at);
             create table public.pings_2026 partition of public.pings for values from ('2026-01-01') to ('2027-01-01');""",
    )
    with pytest.raises(DbguardError, match="no primary key"):
        services.generate_fixes(
            dsn, BREWERY, action="add-tenant-isolation", table="public.pings", out_dir=str(tmp_path / "m")
        )
