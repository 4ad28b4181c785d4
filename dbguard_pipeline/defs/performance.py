"""Dagster: what row level security costs each tenant table (``dbguard analyze``) as an asset, with a WARN check.

``rls_performance`` measures the representative statements of every tenant table as the app role and as the
owner, downstream of ``schema_snapshot`` (it reuses the snapshot), in the nightly job. Its metadata plots the
largest overhead over time and lists each table's numbers and causes. Fixes are not applied to a scratch copy
here (other assets of the run may be connected to the target, which a template copy needs to itself): run
``dbguard analyze`` to prove them.
"""

import dagster as dg

from dbguard_pipeline import services
from dbguard_pipeline.analyze import WARN_OVERHEAD, AnalyzeReport
from dbguard_pipeline.analyze.render import markdown
from dbguard_pipeline.defs.assets import GROUP, KINDS, OWNERS, schema_snapshot, user_errors
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_pipeline.model.schema import Snapshot

MAX_RECORDS = 1000


def _records(report: AnalyzeReport) -> dg.MetadataValue:
    rows = sorted(report.measured, key=lambda t: -(t.overhead or 0.0))[:MAX_RECORDS]
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "table": t.table,
                    "overhead": float(t.overhead or 0.0),
                    "owner_ms": float(round(t.total("owner") or 0.0, 3)),
                    "app_ms": float(round(t.total("app") or 0.0, 3)),
                    "isolated": t.isolated,
                    "causes": "; ".join(c.kind for c in t.causes),
                }
            )
            for t in rows
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("table", "string"),
                dg.TableColumn("overhead", "float"),
                dg.TableColumn("owner_ms", "float"),
                dg.TableColumn("app_ms", "float"),
                dg.TableColumn("isolated", "bool"),
                dg.TableColumn("causes", "string"),
            ]
        ),
    )


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
    owners=OWNERS,
    ins={"snapshot": dg.AssetIn(schema_snapshot.key)},
    description="What row level security costs each tenant table: count, page, look-up (and join) statements run "
    "as the app role with a real tenant's context and as the owner with the explicit tenant predicate, "
    "EXPLAIN ANALYZE in read-only transactions (median of 3). Overhead = app time / owner time; causes "
    "read from the plans. `dbguard analyze` proves the fixes on a scratch copy.",
)
def rls_performance(
    context: dg.AssetExecutionContext, database: PostgresResource, snapshot: Snapshot
) -> dg.Output[AnalyzeReport]:
    name = database.display_name()
    with user_errors("RLS performance analysis", name):
        report = services.analyze(
            database.resolved_dsn(), database.load_config(), snapshot=snapshot, prove=False, top_statements=10
        )
    s = report.summary()
    slow = report.slow(WARN_OVERHEAD)
    context.log.info(
        f"RLS performance of {name}: {s['measured']} tables measured, max overhead "
        f"{s['max_overhead']}x, {len(slow)} above {WARN_OVERHEAD}x ({report.seconds:.1f} s)"
    )
    return dg.Output(
        report,
        metadata={
            "database": dg.MetadataValue.text(name),
            "max_overhead": dg.MetadataValue.float(float(s["max_overhead"])),
            "tables_measured": dg.MetadataValue.int(s["measured"]),
            "tables_above_threshold": dg.MetadataValue.int(len(slow)),
            "causes": dg.MetadataValue.int(s["causes"]),
            "overhead": _records(report),
            "report": dg.MetadataValue.md(markdown(report)),
            "pg_stat_statements": dg.MetadataValue.text(
                f"{len(report.stat_statements.statements)} top statements explained"
                if report.stat_statements.available
                else str(report.stat_statements.reason)
            ),
            "analyze_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        },
    )


@dg.asset_check(
    asset=rls_performance,
    description=f"Warns when row level security makes a tenant table's statements {WARN_OVERHEAD:g}x "
    f"slower or more than the owner's with the explicit tenant predicate.",
)
def rls_overhead_below_threshold(rls_performance: AnalyzeReport) -> dg.AssetCheckResult:
    slow = rls_performance.slow(WARN_OVERHEAD)
    lines = [
        f"- **{t.table}** {t.overhead}x ({round(t.total('owner') or 0, 2)} ms -> "
        f"{round(t.total('app') or 0, 2)} ms): " + ("; ".join(c.message for c in t.causes) or "no known cause")
        for t in slow
    ]
    return dg.AssetCheckResult(
        passed=not slow,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "threshold": dg.MetadataValue.float(WARN_OVERHEAD),
            "max_overhead": dg.MetadataValue.float(float(rls_performance.max_overhead)),
            "slow_tables": dg.MetadataValue.md("\n".join(lines) or "Every tenant table is below the threshold."),
        },
    )


performance_checks = [rls_overhead_below_threshold]
