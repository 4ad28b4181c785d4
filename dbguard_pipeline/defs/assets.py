"""Assets: the schema snapshot and everything downstream of it."""

import dagster as dg

from ..catalog import introspect
from ..model import Snapshot
from .resources import PostgresResource

GROUP = "dbguard_audit"
OWNERS = ["team:platform"]


def snapshot_markdown(snapshot: Snapshot) -> str:
    lines = ["| table | RLS | forced | policies | rows (est.) |", "|---|---|---|---|---|"]
    for t in snapshot.tables:
        name = t.qualified.replace("|", "\\|")
        lines.append(f"| {name} | {'on' if t.rls_enabled else '**off**'} | {'yes' if t.rls_forced else 'no'} | "
                     f"{len(t.policies)} | {max(t.row_estimate, 0)} |")
    return "\n".join(lines)


@dg.asset(
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
    description="Schema snapshot of the audited database: tables, columns, constraints, indexes, RLS flags, "
                "policies, grants, views and functions, from a fixed number of read-only catalog queries.",
)
def schema_snapshot(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.Output[Snapshot]:
    config = database.load_config()
    snapshot = introspect(database.resolved_dsn(), config.schemas or None,
                          statement_timeout_ms=config.statement_timeout_ms, lock_timeout_ms=config.lock_timeout_ms)
    s = snapshot.summary()
    context.log.info(f"snapshot of {database.display_name()}: {s['tables']} tables, {s['policies']} policies")
    return dg.Output(
        snapshot,
        metadata={
            "database": dg.MetadataValue.text(database.display_name()),
            "server_version": dg.MetadataValue.text(snapshot.server_version),
            "tables": dg.MetadataValue.int(s["tables"]),
            "policies": dg.MetadataValue.int(s["policies"]),
            "tables_without_rls": dg.MetadataValue.int(s["tables_without_rls"]),
            "views": dg.MetadataValue.int(s["views"]),
            "functions": dg.MetadataValue.int(s["functions"]),
            "tables_overview": dg.MetadataValue.md(snapshot_markdown(snapshot)),
        },
    )
