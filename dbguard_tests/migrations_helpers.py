"""Helpers shared by the migration tests: planning, applying with the runner, cross-tenant reads as the
application role, snapshot comparison."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.fixes import script as mfiles
from dbguard_pipeline.fixes.actions import build_context, plan_action
from dbguard_pipeline.fixes.ledger import Runner
from dbguard_pipeline.fixes.plan import Migration
from dbguard_pipeline.fixes.sandbox import differences
from dbguard_pipeline.pg.catalog import introspect


def tenant_id(dsn: str, n: int) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select md5('tenant:' || %s::text)::uuid::text", (n,)).fetchone()[0]


def plan(
    dsn: str,
    action: str,
    table: str,
    args: Sequence[str] = (),
    config: Optional[Config] = None,
    tenant_default: Optional[str] = None,
) -> Migration:
    config = config or Config()
    ctx = build_context(introspect(dsn), config, dsn)
    return plan_action(ctx, action, table, list(args), tenant_default)


def write(m: Migration, directory: Path, ts: str = "20250101000000") -> str:
    mfiles.write_files(directory, mfiles.rendered([m], ts))
    return m.stem(ts)


def apply_with_runner(dsn: str, directory: Path, **kw):
    return Runner(dsn, directory, **kw).up()


def findings_for(dsn: str, rules: Sequence[str], config: Optional[Config] = None) -> set[str]:
    """Cache keys of the static findings of the given rules on a fresh snapshot."""
    from dbguard_pipeline.rules import all_rules, run_rules

    config = config or Config()
    registry = all_rules()
    only = [r for r in rules if r in registry]
    if not only:
        return set()
    return {f.cache_key for f in run_rules(introspect(dsn), None, config, only=only)}


def rows_as_app(
    dsn: str, table_sql: str, tenant: str, *, column: str = "tenant_id", role: str = "authenticated", where: str = ""
) -> list:
    """The tenant column of every row the application role sees with the tenant context set to ``tenant``."""
    with psycopg.connect(dsn) as conn, conn.transaction(force_rollback=True):
        conn.execute("select set_config('app.current_tenant_id', %s, true)", (tenant,))
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        q = f"select {sql.Identifier(column).as_string(conn)}::text from {table_sql} {where}"
        return [r[0] for r in conn.execute(q).fetchall()]


def assert_same(before, after) -> None:
    diff = differences(before, after)
    assert not diff, "snapshot differs after rollback:\n" + "\n".join(diff)


def table_state(dsn: str, qualified: str):
    """The snapshot entry of one table, row estimate left out."""
    import dataclasses

    snap = introspect(dsn)
    t = snap.table(qualified)
    return dataclasses.replace(t, row_estimate=0) if t else None
