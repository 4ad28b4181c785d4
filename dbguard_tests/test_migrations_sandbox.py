"""The sandbox: a scratch copy of the target (template, or schema-only through pg_dump when the target is
busy), forward + check + rollback + compare, and the target left untouched."""

from __future__ import annotations

import psycopg
import pytest

from dbguard_pipeline.config import Config
from dbguard_pipeline.fixes.plan import Block
from dbguard_pipeline.fixes.sandbox import differences, round_trip
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.scratch import scratch_database

from .conftest import run_sql
from .migrations_helpers import plan


def _databases(dsn):
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("select datname from pg_database where datname like 'dbguard_sandbox_%'")}


@pytest.mark.integration
def test_a_busy_target_falls_back_to_a_schema_only_copy(demo_dsn):
    m = plan(demo_dsn, "add-tenant-isolation", "conversation_messages")
    with psycopg.connect(demo_dsn) as busy:  # another session on the target: TEMPLATE is impossible
        busy.execute("select 1")
        result = round_trip(demo_dsn, [m], Config())
    assert result.method == "schema-only"
    assert result.ok, [t.line() for t in result.trips]
    assert _databases(demo_dsn) == set()  # the scratch database was dropped


@pytest.mark.integration
def test_the_copy_has_the_data_when_made_from_a_template(demo_dsn):
    with scratch_database(demo_dsn) as (dsn, method):
        assert method == "template"
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select count(*) from public.conversation_messages").fetchone()[0] == 30
    assert _databases(demo_dsn) == set()


@pytest.mark.integration
def test_a_migration_that_does_not_fix_or_does_not_restore_is_reported(demo_dsn):
    m = plan(demo_dsn, "fix-rls-policy", "garages")
    broken = plan(demo_dsn, "fix-rls-policy", "garages")
    broken.rollback = [Block(("select 1",))]  # forgets to disable RLS and drop the policy
    result = round_trip(demo_dsn, [m, broken], Config())
    assert result.trips[0].ok
    bad = result.trips[1]
    assert not bad.ok and not bad.restored
    assert any("rls_enabled" in d for d in bad.differences)
    assert "FAILED" in bad.line() and not result.ok


def test_differences_name_the_object_that_changed(demo_dsn):
    before = introspect(demo_dsn)
    run_sql(demo_dsn, "create index extra_idx on public.garages (name); alter table public.vehicles add column x int")
    diff = differences(before, introspect(demo_dsn))
    assert any("public.garages: indexes" in d and "extra_idx" in d for d in diff)
    assert any("public.vehicles: columns" in d for d in diff)
    assert differences(before, before) == []
