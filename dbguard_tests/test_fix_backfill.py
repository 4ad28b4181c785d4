"""Backfill under load (issue #11, repro r5_backfill_job): add-tenant-isolation on a child table while a job without tenant
context keeps inserting. The migration ends (a primary-key walk bounded at the start, no rescans), the writer
never fails (a BEFORE INSERT trigger gives its rows the parent's tenant, also after NOT NULL), every row has
its parent's tenant, and the rollback removes the trigger and its function."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from dbguard_pipeline import services

from .conftest import run_sql
from .test_fix_loop import BREWERY, repro_file

CHILD = """
create table public.fermenter_logs (
  id bigint generated always as identity primary key,
  batch_id bigint not null references public.batches (id),
  temp_c numeric not null);
create index fermenter_logs_batch_idx on public.fermenter_logs (batch_id);
insert into public.fermenter_logs (batch_id, temp_c) select 1 + g % 6, 18 from generate_series(1, 20000) g;
alter table public.fermenter_logs enable row level security;
create policy fermenter_logs_via_batch on public.fermenter_logs for all to brew_app
  using (exists (select 1 from public.batches b where b.id = batch_id))
  with check (exists (select 1 from public.batches b where b.id = batch_id));
grant select, insert, update, delete on public.fermenter_logs to brew_app;
"""


@pytest.mark.integration
def test_backfill_finishes_under_a_writer_without_tenant_context(databases, tmp_path):
    dsn = databases.create()
    run_sql(dsn, repro_file("brewery", "common").read_text())
    run_sql(dsn, CHILD)
    out = tmp_path / "m"
    fixes = services.generate_fixes(
        dsn,
        BREWERY,
        action="add-tenant-isolation",
        table="public.fermenter_logs",
        out_dir=str(out),
        round_trip="yes",
        timestamp="20260101000000",
    )
    assert fixes.rejected == [] and len(fixes.written) == 2
    forward = fixes.written[0].read_text()
    assert 'BEFORE INSERT ON "public"."fermenter_logs"' in forward and "high_key" in forward

    stop, errors, inserted = threading.Event(), [], []

    def writer() -> None:  # the table owner, no tenant context, one row every few ms
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    conn.execute("insert into public.fermenter_logs (batch_id, temp_c) values (2, 21)")
                    inserted.append(1)
                except psycopg.Error as exc:
                    errors.append(str(exc).splitlines()[0])
                time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while not inserted:
            time.sleep(0.01)
        results = services.migrator(dsn, out).up()
        before_stop = len(inserted)
        while len(inserted) < before_stop + 5:  # the writer still works after NOT NULL
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert len(results) == 1 and errors == []
    with psycopg.connect(dsn) as conn:
        wrong = conn.execute(
            "select count(*) from public.fermenter_logs f join public.batches b on b.id = f.batch_id "
            "where f.tenant_id is distinct from b.tenant_id"
        ).fetchone()[0]
        notnull = conn.execute(
            "select attnotnull from pg_attribute where attrelid = 'public.fermenter_logs'::regclass "
            "and attname = 'tenant_id'"
        ).fetchone()[0]
    assert wrong == 0 and notnull

    services.migrator(dsn, out).rollback("20260101000000_add_tenant_isolation_fermenter_logs")
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            "select count(*) from pg_proc where proname like 'fermenter_logs_tenant_id_fill%' "
            "union all select count(*) from pg_trigger where tgname like 'fermenter_logs_tenant_id_fill%'"
        ).fetchall()
    assert left == [(0,), (0,)]
