"""The application's own statements: the top pg_stat_statements entries (by total time) that read tenant
tables, explained as the app role with the tenant context of the first tenant table they touch.

Only plain SELECTs are explained (no locking clause, no data-modifying WITH). An entry without parameters
runs under ``EXPLAIN ANALYZE`` like the representative statements (read-only transaction, rolled back, with
the timeouts); one with parameters (``$1``: pg_stat_statements keeps no values) gets its generic plan, not
run: ``EXPLAIN (GENERIC_PLAN)`` on PostgreSQL 16+, a prepared statement with ``plan_cache_mode =
force_generic_plan`` before. When the extension is not installed, the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.analyze.causes import Thresholds, find_causes
from dbguard_pipeline.analyze.context import AppContext
from dbguard_pipeline.analyze.plans import parse_plan
from dbguard_pipeline.analyze.report import StatementResult, StatStatements, TopStatement
from dbguard_pipeline.analyze.session import Measure, Timing, as_app, as_owner, time_statement
from dbguard_pipeline.analyze.statements import TenantSample
from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import one_line

CANDIDATES = 200  # entries read from the view before the tenant-table filter
NOT_INSTALLED = (
    "pg_stat_statements is not installed in this database (CREATE EXTENSION pg_stat_statements, with "
    "shared_preload_libraries = 'pg_stat_statements'): only the representative statements were measured"
)


def _select_tables(query: str) -> Optional[tuple[list[tuple[Optional[str], str]], int]]:
    """(tables read, number of parameters) of a plain SELECT; None for anything else."""
    import pglast
    from pglast import ast

    try:
        stmts = pglast.parse_sql(query)
    except pglast.parser.ParseError:
        return None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        return None
    tables: list[tuple[Optional[str], str]] = []
    params = 0
    todo: list[Any] = [stmts[0].stmt]
    while todo:
        n = todo.pop()
        if isinstance(n, (list, tuple)):
            todo.extend(reversed(n))
            continue
        if not isinstance(n, ast.Node):
            continue
        if isinstance(n, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt, ast.LockingClause)):
            return None
        if isinstance(n, ast.RangeVar) and (n.schemaname, str(n.relname)) not in tables:
            tables.append((n.schemaname, str(n.relname)))
        if isinstance(n, ast.ParamRef):
            params = max(params, int(n.number or 0))
        for cls in type(n).__mro__:
            for attr in getattr(cls, "__slots__", ()) or ():
                if attr != "ancestors":
                    todo.append(getattr(n, attr, None))
    return tables, params


def _read_entries(conn: psycopg.Connection, schema: str) -> list[tuple[str, int, float, float]]:
    view = sql.Identifier(schema, "pg_stat_statements")
    return conn.execute(
        sql.SQL(
            "SELECT query, calls::bigint, total_exec_time, mean_exec_time FROM {} s"
            " WHERE s.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
            " AND s.query ~* '^\\s*(select|with)\\s' ORDER BY s.total_exec_time DESC LIMIT {}"
        ).format(view, sql.Literal(CANDIDATES))
    ).fetchall()


def _first(cur: psycopg.Cursor[Any]) -> Any:
    row = cur.fetchone()
    return row[0] if row else None


def _generic_plan(conn: psycopg.Connection, query: str, params: int, version: int) -> Any:
    text = sql.SQL(query)  # a statement text read from pg_stat_statements
    with conn.transaction():
        if version >= 160000:
            return _first(conn.execute(sql.SQL("EXPLAIN (GENERIC_PLAN, VERBOSE, FORMAT JSON) ") + text))
        conn.execute("select set_config('plan_cache_mode', 'force_generic_plan', true)")
        conn.execute(sql.SQL("PREPARE dbguard_analyze_generic AS ") + text)
        try:
            nulls = sql.SQL(", ").join([sql.SQL("NULL")] * params)
            return _first(
                conn.execute(
                    sql.SQL("EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE dbguard_analyze_generic ({})").format(nulls)
                )
            )
        finally:
            conn.execute("DEALLOCATE dbguard_analyze_generic")


def top_statements(
    conn: psycopg.Connection,
    snapshot: Snapshot,
    config: Config,
    ctx: AppContext,
    m: Measure,
    tables: Sequence[Table],
    samples: dict[str, TenantSample],
    limit: int,
    th: Thresholds,
) -> StatStatements:
    with as_owner(conn, m) as c:
        row = c.execute(
            "SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n"
            " ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"
        ).fetchone()
    if row is None:
        return StatStatements(False, NOT_INSTALLED)
    with as_owner(conn, m) as c:
        preload = c.execute("SELECT current_setting('shared_preload_libraries', true)").fetchone()
    if "pg_stat_statements" not in str(preload[0] if preload else ""):
        return StatStatements(
            False, "pg_stat_statements is installed but not loaded (it must be in shared_preload_libraries)"
        )
    try:
        with as_owner(conn, m) as c:
            entries = _read_entries(c, row[0])
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:  # not in shared_preload_libraries
        return StatStatements(
            False, f"pg_stat_statements is installed but cannot be read: {one_line(exc.diag.message_primary or exc)}"
        )
    by_name = {t.qualified: t for t in tables}
    out = StatStatements(True)
    for query, calls, total, mean in entries:
        parsed = _select_tables(query)
        if parsed is None:
            continue
        names, params = parsed
        touched = [by_name[q] for q in (f"{s or 'public'}.{r}" for s, r in names) if q in by_name]
        sampled = [t for t in touched if t.qualified in samples]
        if not sampled:
            continue
        out.statements.append(
            _explain(
                conn,
                snapshot,
                config,
                ctx,
                m,
                query,
                params,
                calls,
                total,
                mean,
                touched,
                samples[sampled[0].qualified],
                th,
            )
        )
        if len(out.statements) >= limit:
            break
    return out


def _explain(
    conn: psycopg.Connection,
    snapshot: Snapshot,
    config: Config,
    ctx: AppContext,
    m: Measure,
    query: str,
    params: int,
    calls: int,
    total: float,
    mean: float,
    touched: list[Table],
    sample: TenantSample,
    th: Thresholds,
) -> TopStatement:
    top = TopStatement(
        query=one_line(query)[:2000],
        calls=int(calls),
        total_ms=float(total),
        mean_ms=float(mean),
        tables=[t.qualified for t in touched],
        mode="generic plan" if params else "analyzed",
    )
    timing = Timing()
    try:
        with as_app(conn, ctx, sample, m) as c:
            if params:
                timing.plan = parse_plan(_generic_plan(c, query, params, snapshot.server_version_num))
            else:
                text = sql.SQL(query)  # a statement text read from pg_stat_statements
                timing = time_statement(c, text, runs=m.runs, slow_ms=m.slow_ms, timeout_ms=m.statement_timeout_ms)
    except psycopg.Error as exc:
        if conn.broken:
            raise
        top.error = one_line(getattr(exc.diag, "message_primary", None) or exc)
        return top
    top.error = timing.error
    top.app_ms = timing.ms
    if timing.plan is not None:
        top.plan = timing.plan.lines()
        result = StatementResult("top", "pg_stat_statements entry", query, "", timing, Timing())
        for t in touched:
            path = tenancy.tenant_path(snapshot, t, config) or []
            for cause in find_causes(t, path, snapshot, config, [result], th.slow_overhead, th.min_ms, th):
                if cause.kind != "unexplained" and cause not in top.causes:
                    top.causes.append(cause)
    return top
