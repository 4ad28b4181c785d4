"""Dagster: the isolation probe as an asset, and the blocking check that no probe leaked.

``definitions.py`` wires these in: ``isolation_report`` (asset) and ``isolation_checks`` (asset checks).
"""

import dagster as dg
import psycopg

from dbguard_pipeline import services
from dbguard_pipeline.defs.assets import CODE_VERSION, DB_RETRY, GROUP, OWNERS, schema_snapshot, user_errors
from dbguard_pipeline.defs.audit_steps import table_value
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_pipeline.probe import ProbeReport
from dbguard_pipeline.probe.report import COMMANDS

MAX_WITNESSES = 200  # metadata stays readable; the full report is the asset value


@dg.asset(
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
    deps=[schema_snapshot],
    code_version=CODE_VERSION,
    retry_policy=DB_RETRY,
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
            raise dg.Failure(
                description=f"isolation probe failed: {reason}",
                metadata={"database": dg.MetadataValue.text(name)},
                allow_retries=False,
            ) from None
    s = report.summary()
    context.log.info(
        f"isolation probe of {database.display_name()}: {s['tables']} relations, {s['probes']} probes, "
        f"{s['leaks']} leaks in {s['leaking_tables']} relations, {s['not_probed']} not probed "
        f"({report.seconds:.2f} s)"
    )
    return dg.Output(report, metadata=report_metadata(report, database.display_name()))


def report_metadata(report: ProbeReport, database: str) -> dict:
    """The metadata of an isolation report (the nightly asset's and each fleet partition's)."""
    s = report.summary()
    return {
        "database": dg.MetadataValue.text(database),
        "app_role": dg.MetadataValue.text(report.app_role),
        "leaks": dg.MetadataValue.int(s["leaks"]),
        "leaking_tables": dg.MetadataValue.int(s["leaking_tables"]),
        "tables_probed": dg.MetadataValue.int(s["tables"]),
        "probes": dg.MetadataValue.int(s["probes"]),
        "not_probed": dg.MetadataValue.int(s["not_probed"]),
        "probe_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        # tables the probe inserted a test row into (rolled back), and how many of them are larger afterwards
        "test_rows_tables": dg.MetadataValue.int(len(report.test_rows)),
        "tables_grown": dg.MetadataValue.int(sum(1 for n in report.test_rows.values() if n > 0)),
        "results": isolation_grid(report),
    }


MARKS = {"leak": "LEAK", "isolated": "ok", "not probed": "not probed"}


def isolation_grid(report: ProbeReport) -> dg.TableMetadataValue:
    """One row per relation, one column per command: LEAK, ok, not probed, or "-" (not probed on a view)."""
    rows = []
    for q in report.tables:
        row: dict[str, str | int | float | bool | None] = {"relation": q, "kind": report.kinds.get(q, "table")}
        for cmd in COMMANDS:
            row[cmd] = MARKS[report.outcome(q, cmd)[0]] if cmd in report.commands_of(q) else "-"
        rows.append(row)
    rows.sort(key=lambda r: (not any(r[c] == "LEAK" for c in COMMANDS), str(r["relation"])))  # leaks first
    return table_value(
        rows,
        [
            ("relation", "string", "schema.name"),
            ("kind", "string", "table or view"),
            *((c, "string", f"{c.upper()} as tenant A against tenant B's rows") for c in COMMANDS),
        ],
    )


def _witness_table(report: ProbeReport) -> dg.TableMetadataValue:
    return table_value(
        [
            {"relation": r.qualified, "command": r.command, "probe": r.probe, "rows": r.rows, "witness": r.detail}
            for r in report.leaks[:MAX_WITNESSES]
        ],
        [
            ("relation", "string", "schema.name"),
            ("command", "string", ""),
            ("probe", "string", ""),
            ("rows", "int", "rows of tenant B reached"),
            ("witness", "string", "what was tried and what came back"),
        ],
    )


@dg.asset_check(
    asset=isolation_report,
    blocking=True,
    description="Fails (ERROR, blocking downstream assets) when any isolation probe leaked; lists every witness.",
)
def no_cross_tenant_leaks(isolation_report: ProbeReport) -> dg.AssetCheckResult:
    report = isolation_report
    return dg.AssetCheckResult(
        passed=not report.leaks, severity=dg.AssetCheckSeverity.ERROR, metadata=leak_check_metadata(report)
    )


def leak_check_metadata(report: ProbeReport) -> dict:
    """What ``no_cross_tenant_leaks`` shows: every witness and every probe that could not run."""
    return {
        "leaks": dg.MetadataValue.int(len(report.leaks)),
        "leaking_tables": dg.MetadataValue.json(report.leaking_tables()),
        "witnesses": _witness_table(report),
        "not_probed": table_value(
            [
                {"relation": n.qualified, "command": n.command, "probe": n.probe, "reason": n.reason}
                for n in report.not_probed
            ],
            [
                ("relation", "string", ""),
                ("command", "string", ""),
                ("probe", "string", ""),
                ("reason", "string", "why it could not run (never counted as isolated)"),
            ],
        ),
    }


isolation_checks = [no_cross_tenant_leaks]
