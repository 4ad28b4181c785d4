"""``analyze()``: what row level security costs each tenant table, measured as the app role.

For each tenant table (``probe.plan_targets``: the same tables the isolation probe covers): pick a real tenant
with rows there (the most common one, from pg_stats), build the representative statements, time each as the
app role with that tenant's context and as the connecting role with the explicit predicate, read the plans for
causes, and build the fixes the causes ask for. Then (``Options.prove``) apply each fix on a scratch copy,
measure the same statements again and propose only the fixes that made them faster (:mod:`.prove`), and
explain the top pg_stat_statements entries that touch tenant tables (:mod:`.statstatements`).

Never writes to the target: every statement runs in a READ ONLY transaction that is rolled back; fixes are
applied to the copy only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import psycopg

from dbguard_pipeline.analyze.causes import Thresholds, find_causes
from dbguard_pipeline.analyze.context import AppContext
from dbguard_pipeline.analyze.measure import Work, measure_statements
from dbguard_pipeline.analyze.plans import same_rows
from dbguard_pipeline.analyze.report import AnalyzeReport, Suggestion, TableResult
from dbguard_pipeline.analyze.session import (
    Measure,
    as_owner,
    member_of,
    membership_tables,
    most_common_tenants,
    preflight,
    sample_tenant,
)
from dbguard_pipeline.analyze.statements import TenantSample, build
from dbguard_pipeline.analyze.suggest import suggestions_for
from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import ConnectionError_, DbguardError, NotFoundError
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.pg.dsn import describe_dsn, mask_secrets
from dbguard_pipeline.pg.session import connect
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import plural, qname

WARN_OVERHEAD = 10.0  # the Dagster check warns from this overhead on


@dataclass(frozen=True)
class Options:
    runs: int = 3  # timed runs per statement and role (the median is reported), after one warm-up run
    statement_timeout_ms: int = 10_000  # per statement (never more than the config's statement_timeout_ms)
    slow_ms: float = 1_000.0  # a statement slower than this in its warm-up run is timed once
    slow_overhead: float = 2.0  # a table is slow from this overhead on ...
    min_ms: float = 0.5  # ... when its statements take at least this long as the app role
    min_speedup: float = 1.5  # a fix is proposed when it makes the app role's statements this much faster
    prove: bool = True  # apply the fixes on a scratch copy and measure them (else they are listed unproven)
    top_statements: int = 10  # pg_stat_statements entries to explain (0: none)


def _rows_notes(result: TableResult, table: Table) -> None:
    count = next((s for s in result.statements if s.name == "count"), None)
    if count is None or count.app.plan is None or count.owner.plan is None:
        return
    a, o = count.app.plan.aggregated_rows(), count.owner.plan.aggregated_rows()
    slack = max(count.app.plan.aggregated_slack(), count.owner.plan.aggregated_slack())
    if a is None or o is None or same_rows(a, o, slack):
        return
    if a > o:
        result.isolated = False
        result.notes.append(
            f"the app role sees {a:,.0f} rows, the tenant has {o:,.0f}: the policies let it read "
            f"other tenants' rows (dbguard test-isolation), so the overhead compares different work"
        )
    elif a == 0 and o > 0:
        result.notes.append(
            f"the app role sees none of the tenant's {o:,.0f} rows: do tenant.context and the "
            f"policies read the same setting?"
        )
    elif a < o:
        result.notes.append(
            f"the app role sees {a:,.0f} of the tenant's {o:,.0f} rows: the policies filter on more "
            f"than the tenant (a user, a role)"
        )


class _Analyzer:
    def __init__(self, conn: psycopg.Connection, snapshot: Snapshot, config: Config, options: Options, m: Measure):
        self.conn, self.snapshot, self.config, self.options, self.m = conn, snapshot, config, options, m
        self.ctx = AppContext(conn, snapshot, config)
        self.th = Thresholds(options.slow_overhead, options.min_ms, config.tenant_index_min_rows)
        self.memberships = membership_tables(snapshot, config) if config.tenant.context == "jwt" else []
        self.users: dict[str, Optional[str]] = {}
        self.known: dict[tuple[str, str, tuple[str, ...]], Suggestion] = {}
        with as_owner(conn, m) as c:
            self.common = most_common_tenants(c, config.tenant.column)

    def table(self, table: Table) -> tuple[TableResult, Optional[Work]]:
        started = time.perf_counter()
        result = TableResult(
            table.qualified,
            table_rows=max(table.row_estimate, 0) if table.row_estimate >= 0 else None,
            shown=qname(table.schema, table.name),
        )
        path = tenancy.tenant_path(self.snapshot, table, self.config)
        if not table.rls_enabled:
            result.status, result.reason = (
                "skipped",
                (
                    "row level security is not enabled: the app role's statements "
                    "have no tenant filter to measure (dbguard validate reports it)"
                ),
            )
            return result, None
        if path is None:
            result.status, result.reason = "skipped", "no tenant column and no foreign-key path to one"
            return result, None
        with as_owner(self.conn, self.m) as c:
            sample = sample_tenant(c, table, path, self.config, self.common.get(table.qualified))
            if sample is not None and self.memberships:
                if sample.tenant not in self.users:
                    self.users[sample.tenant] = member_of(c, self.memberships, sample.tenant, sample.tenant_type)
                sample = TenantSample(**{**asdict(sample), "user": self.users[sample.tenant]})
        if sample is None:
            result.status, result.reason = "skipped", "no rows: no tenant to measure it for"
            return result, None
        result.tenant, result.user, result.tenant_share = sample.tenant, sample.user, sample.share
        work = Work(table, list(path), sample, build(table, path, sample, self.config))
        result.statements = measure_statements(self.conn, self.ctx, work, self.m)
        denied = [s.app.error for s in result.statements if s.app.error and "permission denied" in s.app.error]
        if denied and len(denied) == len(result.statements):
            result.status, result.reason = "skipped", f"the app role cannot read it: {denied[0]}"
            return result, None
        _rows_notes(result, table)
        result.causes = find_causes(
            table, path, self.snapshot, self.config, result.statements, result.overhead, result.total("app"), self.th
        )
        result.suggestions = suggestions_for(result.causes, table.qualified, self.snapshot, self.config, self.known)
        result.seconds = time.perf_counter() - started
        return result, work


def _tables(snapshot: Snapshot, config: Config, names: Optional[Sequence[str]]) -> list[Table]:
    from dbguard_pipeline.probe import plan_targets

    try:
        targets = plan_targets(snapshot, config, names)
    except NotFoundError as exc:  # the probe's wording, for a command that measures
        raise NotFoundError(str(exc).replace("nothing to probe", "nothing to measure")) from None
    return [t.table for t in targets if t.kind == "table" and t.table is not None]


def analyze(
    dsn: str,
    config: Optional[Config] = None,
    tables: Optional[Sequence[str]] = None,
    *,
    options: Options = Options(),
    snapshot: Optional[Snapshot] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> AnalyzeReport:
    """Measure what row level security costs each tenant table of the database at ``dsn`` (or ``tables``).

    Connect as a superuser or BYPASSRLS role (the baseline reads with row_security off); the statements run as
    ``config.tenant.app_role``, which must be neither (refused with a one-line error otherwise)."""
    from dbguard_pipeline.pg.catalog import introspect

    config = config or Config()
    started = time.perf_counter()
    m = Measure(
        runs=max(1, options.runs),
        slow_ms=options.slow_ms,
        statement_timeout_ms=min(options.statement_timeout_ms, config.statement_timeout_ms),
        lock_timeout_ms=config.lock_timeout_ms,
    )
    conn = connect(dsn, autocommit=True, application_name="dbguard analyze")
    works: list[tuple[TableResult, Work]] = []
    samples: dict[str, TenantSample] = {}
    try:
        if snapshot is None:
            snapshot = introspect(
                conn, None, statement_timeout_ms=config.statement_timeout_ms, lock_timeout_ms=config.lock_timeout_ms
            )
        preflight(conn, config, snapshot.database)
        search_path = conn.execute("select current_setting('search_path')").fetchone()[0]  # type: ignore[index]
        m = Measure(**{**asdict(m), "search_path": search_path})
        chosen = _tables(snapshot, config, tables)
        an = _Analyzer(conn, snapshot, config, options, m)
        report = AnalyzeReport(
            database=describe_dsn(dsn),
            server_version=snapshot.server_version,
            app_role=config.tenant.app_role,
            context=an.ctx.describe(),
            settings={
                **asdict(options),
                "statement_timeout_ms": m.statement_timeout_ms,
                "warn_overhead": WARN_OVERHEAD,
            },
        )
        for i, table in enumerate(chosen, 1):
            result, work = an.table(table)
            report.tables.append(result)
            if work is not None:
                samples[table.qualified] = work.sample
                if result.suggestions:
                    works.append((result, work))
            if progress:
                progress(
                    f"[{i}/{len(chosen)}] {result.name}: "
                    + (f"{result.overhead}x" if result.status == "measured" else f"skipped ({result.reason})")
                )
        if options.top_statements > 0:
            from dbguard_pipeline.analyze.statstatements import top_statements

            report.stat_statements = top_statements(
                conn, snapshot, config, an.ctx, m, chosen, samples, options.top_statements, an.th
            )
    except psycopg.Error as exc:
        msg = mask_secrets(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, dsn)
        if conn.broken or conn.closed:
            raise ConnectionError_(f"lost the connection to {describe_dsn(dsn)}: {msg}") from None
        raise DbguardError(f"analyze failed on {describe_dsn(dsn)}: {msg}") from None
    finally:
        conn.close()  # before the scratch copy: CREATE DATABASE ... TEMPLATE needs the target to itself
    suggestions = _unique(s for r, _ in works for s in r.suggestions)
    if suggestions and options.prove:
        from dbguard_pipeline.analyze.prove import prove

        report.proof = prove(dsn, snapshot, config, works, suggestions, m, options.min_speedup, progress)
    else:
        for s in suggestions:
            s.status, s.reason = "unproven", "not measured on a scratch copy (--no-prove)"
        report.proof = {"method": None, "suggestions": len(suggestions)}
    report.seconds = time.perf_counter() - started
    if progress:
        done = report.summary()
        progress(
            f"{plural(done['measured'], 'table')} measured, {plural(done['suggestions'], 'suggestion')} "
            f"proven in {report.seconds:.1f} s"
        )
    return report


def _unique(items: Iterable[Suggestion]) -> list[Suggestion]:
    out: list[Suggestion] = []
    for s in items:
        if all(s is not x for x in out):
            out.append(s)
    return out
