"""Talking to the database for ``analyze``: who may measure, which tenant each table is measured for, and the
timed ``EXPLAIN ANALYZE`` runs.

Everything runs in READ ONLY transactions that are rolled back (:func:`read_only_session`), with statement
and lock timeouts; each run sits in a savepoint, so a statement that hits the timeout is recorded as such and
the others go on. The application's statements run as ``tenant.app_role`` with the tenant's context (the
probe's code, :mod:`.context`); the baseline runs as the connecting role (superuser or BYPASSRLS) with
``row_security = off`` and the explicit tenant predicate.
"""
from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.analyze.context import AppContext
from dbguard_pipeline.analyze.plans import Plan, parse_plan
from dbguard_pipeline.analyze.statements import TenantSample, tenant_filter, typed
from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import NotFoundError, PermissionError_
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.pg.session import read_only_session
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import one_line

MARK = "/* dbguard analyze */ "  # on the statements that pick a tenant: pg_stat_statements entries to leave out


class AnalyzeRefused(PermissionError_):
    """analyze will not measure as asked: the application role bypasses row level security, or the connecting
    role cannot act as it or read past the policies."""


def preflight(conn: psycopg.Connection, config: Config, database: str) -> None:
    """Refuse (one line, exit 2) to measure RLS as a role it never applies to, or without the rights needed."""
    role = config.tenant.app_role
    row = conn.execute(
        "select cu.rolname::text, cu.rolsuper, cu.rolbypassrls, r.rolname is not null,"
        " coalesce(r.rolsuper, false), coalesce(r.rolbypassrls, false),"
        " coalesce(pg_has_role(current_user, r.oid, 'MEMBER'), false)"
        " from pg_roles cu left join pg_roles r on r.rolname = %s where cu.rolname = current_user", (role,)).fetchone()
    assert row is not None  # current_user always has a pg_roles row
    me, me_super, me_bypass, exists, app_super, app_bypass, can_set = row
    if not exists:
        raise NotFoundError(f"the application role {role!r} does not exist in {database}: set tenant.app_role in "
                            f"dbguard.yaml to the role the application's queries run as")
    why = "it is a superuser" if app_super else "it has BYPASSRLS" if app_bypass else ""
    if why:
        raise AnalyzeRefused(f"refusing to measure row level security as {role}: {why}, so no policy ever runs for "
                             f"it and there is nothing to measure; set tenant.app_role to the role the application's "
                             f"queries run as{'' if app_super else f' (or ALTER ROLE {role} NOBYPASSRLS)'}")
    if not (me_super or me_bypass):
        raise AnalyzeRefused(f"connected as {me}, which is neither a superuser nor BYPASSRLS: the baseline runs each "
                             f"statement with row_security off and the explicit tenant predicate; connect as the "
                             f"database owner (postgres on Supabase)")
    if not can_set:
        raise AnalyzeRefused(f"connected as {me}, which cannot SET ROLE {role}: GRANT {role} TO {me}")


# --------------------------------------------------------------------------- which tenant
def most_common_tenants(conn: psycopg.Connection, column: str) -> dict[str, tuple[str, float]]:
    """``schema.table`` -> (the most common value of ``column``, its frequency), from pg_stats (no table is read)."""
    out: dict[str, tuple[str, float]] = {}
    for schema, name, vals, freqs, _inherited in conn.execute(
            "select schemaname::text, tablename::text, most_common_vals::text::text[], most_common_freqs, inherited"
            " from pg_catalog.pg_stats where attname = %s and most_common_vals is not null"
            " order by inherited", (column,)).fetchall():
        if vals and freqs:
            best = max(range(len(freqs)), key=lambda i: (freqs[i], -i))
            out[f"{schema}.{name}"] = (vals[best], float(freqs[best]))  # inherited (partitioned) stats win
    return out


def _tenant_value(alias: str, table: Table, path: Sequence[tenancy.FkStep], config: Config) -> sql.Composed:
    """The tenant of a row of ``alias`` as a scalar expression (through the foreign-key path when needed)."""
    if not path:
        col = tenancy.tenant_column(table, config)
        return sql.SQL("{}::text").format(sql.Identifier(alias, col or ""))
    step, inner = path[0], f"v{len(path)}"
    on = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(inner, rc), sql.Identifier(alias, c))
                               for c, rc in zip(step.constraint.columns, step.constraint.ref_columns, strict=True))
    return sql.SQL("(SELECT {} FROM {} AS {} WHERE {} LIMIT 1)").format(
        _tenant_value(inner, step.parent, path[1:], config), sql.Identifier(step.parent.schema, step.parent.name),
        sql.Identifier(inner), on)


def sample_tenant(conn: psycopg.Connection, table: Table, path: Sequence[tenancy.FkStep], config: Config,
                  common: Optional[tuple[str, float]]) -> Optional[TenantSample]:
    """A real tenant with rows in ``table`` (the most common one when pg_stats knows it: the tenant's real
    selectivity) and the primary key of its first row. None when the table holds no tenant's rows."""
    end = path[-1].parent if path else table
    tcol = tenancy.tenant_column(end, config)
    if tcol is None or end.column(tcol) is None:
        return None
    ttype = end.column(tcol).type  # type: ignore[union-attr]
    pk = table.primary_key.columns if table.primary_key else ()
    src = sql.SQL("{} AS t").format(sql.Identifier(table.schema, table.name))
    order = sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(sql.Identifier("t", c) for c in pk)) if pk else sql.SQL("")
    keys: list[sql.Composable] = [sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in pk]
    tenant, share = (common if common and not path else (None, None))
    if tenant is None:
        row = conn.execute(sql.SQL(MARK + "SELECT {} FROM {} WHERE {} IS NOT NULL{} LIMIT 1").format(
            sql.SQL(", ").join([_tenant_value("t", table, path, config), *keys]), src,
            _tenant_value("t", table, path, config), order)).fetchone()
        if row is None:
            return None
        tenant, key = row[0], tuple(row[1:])
    else:
        where = tenant_filter("t", table, path, config, typed(tenant, ttype))
        row = conn.execute(sql.SQL(MARK + "SELECT {} FROM {} WHERE {}{} LIMIT 1").format(
            sql.SQL(", ").join(keys or [sql.SQL("1")]), src, where, order)).fetchone()
        if row is None:
            return None
        key = tuple(row) if pk else ()
    types = tuple(table.column(c).type for c in pk)  # type: ignore[union-attr]
    return TenantSample(tenant=str(tenant), tenant_type=ttype, key=key if pk and None not in key else None,
                        key_types=types, share=share)


def membership_tables(snapshot: Snapshot, config: Config) -> list[tuple[Table, str, str]]:
    """(table, user column, tenant column) of the tables that say which user belongs to which tenant: a tenant
    column and a one-column foreign key to a ``users`` table (auth.users on Supabase)."""
    out = []
    for t in tenancy.tenant_tables(snapshot, config):
        tcol = config.tenant.column if tenancy.has_tenant_column(t, config) else None
        if tcol is None:
            continue
        for fk in t.foreign_keys:
            if len(fk.columns) == 1 and fk.ref_table == "users":
                out.append((t, fk.columns[0], tcol))
    return sorted(out, key=lambda x: (x[0].schema == "auth", x[0].qualified, x[1]))


def member_of(conn: psycopg.Connection, memberships: Sequence[tuple[Table, str, str]], tenant: str,
              tenant_type: str) -> Optional[str]:
    """A user of ``tenant``, preferring one who belongs to no other tenant (so that a membership policy shows
    the app role the same rows as the explicit predicate)."""
    for table, ucol, tcol in memberships:
        u, tc, src = sql.Identifier(ucol), sql.Identifier(tcol), sql.Identifier(table.schema, table.name)
        row = conn.execute(sql.SQL(
            MARK + "SELECT m.{u}::text FROM {t} AS m WHERE m.{u} IN (SELECT x.{u} FROM {t} AS x WHERE x.{tc} = {v})"
            " GROUP BY m.{u} ORDER BY count(DISTINCT m.{tc}), m.{u} LIMIT 1").format(
            u=u, t=src, tc=tc, v=typed(tenant, tenant_type))).fetchone()
        if row:
            return str(row[0])
    return None


# --------------------------------------------------------------------------- timed runs
@dataclass
class Timing:
    """Median execution time of one statement as one role, and the plan of its first (warm-up) run."""

    ms: Optional[float] = None
    runs: list[float] = field(default_factory=list)
    plan: Optional[Plan] = None
    timed_out: bool = False
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.ms is not None and not self.error


_PLAN = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, VERBOSE, TIMING OFF, FORMAT JSON) ")
_TIMED = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) ")


def _message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    return one_line((diag.message_primary if diag is not None else None) or str(exc) or type(exc).__name__)


def _explain(conn: psycopg.Connection, prefix: sql.SQL, stmt: sql.Composable) -> Any:
    row = conn.execute(sql.Composed([prefix, stmt])).fetchone()
    return row[0] if row else None


def time_statement(conn: psycopg.Connection, stmt: sql.Composable, *, runs: int, slow_ms: float,
                   timeout_ms: int) -> Timing:
    """One warm-up run that keeps its plan (VERBOSE: schema-qualified relations), then ``runs`` timed runs; no
    per-node timing (its overhead would blur the comparison); a statement slower than ``slow_ms`` is timed once.
    An error or the statement timeout is recorded in the result (``error``); the transaction is then aborted
    and the caller goes on in a new one (:func:`time_all`)."""
    out = Timing()
    try:
        first = _explain(conn, _PLAN, stmt)
        out.plan = parse_plan(first)
        planned = float(first[0].get("Execution Time") or 0.0)
        for _ in range(1 if planned >= slow_ms else max(1, runs)):
            doc = _explain(conn, _TIMED, stmt)
            out.runs.append(float(doc[0].get("Execution Time") or 0.0))
        out.ms = statistics.median(out.runs)
    except psycopg.errors.QueryCanceled:
        out.timed_out, out.ms = True, float(timeout_ms)
        out.error = f"cancelled by the statement timeout ({timeout_ms} ms)"
    except psycopg.Error as exc:
        if conn.broken or isinstance(exc, psycopg.OperationalError):
            raise
        out.error = _message(exc)
    return out


def time_all(session: Callable[[], contextlib.AbstractContextManager[psycopg.Connection]], statements: Sequence[sql.Composable],
             m: Measure) -> list[Timing]:
    """Time each statement in transactions opened by ``session``; one that fails ends its transaction and the
    next statement runs in a new one (no savepoint per run: a round trip each saved)."""
    out: list[Timing] = []
    while len(out) < len(statements):
        with session() as c:
            for stmt in statements[len(out):]:
                t = time_statement(c, stmt, runs=m.runs, slow_ms=m.slow_ms, timeout_ms=m.statement_timeout_ms)
                out.append(t)
                if t.error:
                    break
    return out


@dataclass(frozen=True)
class Measure:
    """How to measure: runs per statement, the time past which a statement is timed once, the timeouts."""

    runs: int = 3
    slow_ms: float = 1_000.0
    statement_timeout_ms: int = 10_000
    lock_timeout_ms: int = 2_000
    search_path: str = '"$user", public'


@contextlib.contextmanager
def as_app(conn: psycopg.Connection, ctx: AppContext, sample: TenantSample, m: Measure) -> Iterator[psycopg.Connection]:
    """A read-only transaction in which statements run as the app role with the tenant's context."""
    with read_only_session(conn, statement_timeout_ms=m.statement_timeout_ms, lock_timeout_ms=m.lock_timeout_ms,
                           settings={"search_path": m.search_path}) as c:
        ctx.enter(sample.tenant, sample.user)
        yield c


@contextlib.contextmanager
def as_owner(conn: psycopg.Connection, m: Measure) -> Iterator[psycopg.Connection]:
    """A read-only transaction in which statements run as the connecting role with row_security off."""
    with read_only_session(conn, statement_timeout_ms=m.statement_timeout_ms, lock_timeout_ms=m.lock_timeout_ms,
                           settings={"search_path": m.search_path, "row_security": "off"}) as c:
        yield c
