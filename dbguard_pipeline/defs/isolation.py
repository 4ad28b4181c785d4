"""Dagster: the isolation probe as an asset, and the blocking check that no probe leaked.

``definitions.py`` wires these in: ``isolation_report`` (asset) and ``isolation_checks`` (asset checks).
"""

import dagster as dg
import psycopg

from dbguard_pipeline import services
from dbguard_pipeline.defs.assets import GROUP, OWNERS, schema_snapshot, user_errors
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_pipeline.probe import ProbeReport

MAX_WITNESSES = 200  # metadata stays readable; the full report is the asset value


@dg.asset(
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
    deps=[schema_snapshot],
    description="Tenant isolation proven by trying it: as the application role with tenant A's context, SELECT, "
                "INSERT, UPDATE, DELETE and move-to-B probes against tenant B's rows on every tenant table, in "
                "transactions that are rolled back. Leaks come with their witness.",
)
def isolation_report(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.Output[ProbeReport]:
    # Like the other assets: a failure carries its one-line reason (and the database) into the run's failure
    # event, which is what the alert sensor sends; a database error the probe did not translate, too.
    with user_errors("loading the configuration and database target"):
        config = database.load_config()
        dsn = database.resolved_dsn()
        name = database.display_name()
    with user_errors("isolation probe", name):
        try:
            report = services.probe(dsn, config)  # with the audit/probe disagreements
        except psycopg.Error as exc:
            reason = " ".join(str(getattr(exc.diag, "message_primary", None) or exc).split())
            raise dg.Failure(description=f"isolation probe failed: {reason}",
                             metadata={"database": dg.MetadataValue.text(name)}, allow_retries=False) from None
    s = report.summary()
    context.log.info(f"isolation probe of {database.display_name()}: {s['tables']} relations, {s['probes']} probes, "
                     f"{s['leaks']} leaks in {s['leaking_tables']} relations, {s['not_probed']} not probed "
                     f"({report.seconds:.2f} s)")
    return dg.Output(
        report,
        metadata={
            "database": dg.MetadataValue.text(database.display_name()),
            "app_role": dg.MetadataValue.text(report.app_role),
            "leaks": dg.MetadataValue.int(s["leaks"]),
            "leaking_tables": dg.MetadataValue.int(s["leaking_tables"]),
            "tables_probed": dg.MetadataValue.int(s["tables"]),
            "probes": dg.MetadataValue.int(s["probes"]),
            "not_probed": dg.MetadataValue.int(s["not_probed"]),
            "probe_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
            "results": dg.MetadataValue.md(report.markdown()),
        },
    )


def _witness_markdown(report: ProbeReport) -> str:
    leaks = report.leaks
    lines = [f"- **{r.qualified}** `{r.command}` ({r.probe}): {r.detail}" for r in leaks[:MAX_WITNESSES]]
    if len(leaks) > MAX_WITNESSES:
        lines.append(f"- ... and {len(leaks) - MAX_WITNESSES} more (see the isolation_report asset)")
    return "\n".join(lines) or "No leak: every probe held."


@dg.asset_check(
    asset=isolation_report,
    blocking=True,
    description="Fails (ERROR, blocking downstream assets) when any isolation probe leaked; lists every witness.",
)
def no_cross_tenant_leaks(isolation_report: ProbeReport) -> dg.AssetCheckResult:
    report = isolation_report
    s = report.summary()
    return dg.AssetCheckResult(
        passed=s["leaks"] == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "leaks": dg.MetadataValue.int(s["leaks"]),
            "leaking_tables": dg.MetadataValue.json(report.leaking_tables()),
            "witnesses": dg.MetadataValue.md(_witness_markdown(report)),
            "not_probed": dg.MetadataValue.md(
                "\n".join(f"- {n.qualified} `{n.command}` ({n.probe}): {n.reason}" for n in report.not_probed)
                or "Every probe ran."),
        },
    )


isolation_checks = [no_cross_tenant_leaks]
