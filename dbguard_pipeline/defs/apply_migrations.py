"""Applying approved migrations from Dagster, and what the last attempts did, shown the next night.

Job ``apply_approved_migrations`` (resource ``database``): one op that calls
:func:`dbguard_pipeline.services.apply_approved`, the function ``dbguard fix`` calls: every pending migration of
the folder (``$DBGUARD_MIGRATIONS_DIR``, default ``migrations``) that has a valid approval record in
``approvals/``, in file order, backed up, applied, verified on the live database and rolled back (and its data
restored) when anything got worse. Approval is never given here: the job has no "approve" switch, and the
launch config cannot name a migration to apply; approvals are files committed through review. When something
was rolled back the op fails, so the run fails and ``dbguard_alert_sensor`` sends the alert.

Asset check ``last_fix_outcomes`` on ``isolation_report`` (so it runs with the nightly audit): the newest rows
of ``dbguard.fix_outcomes`` as a table; it fails (WARN) when the last attempt of a migration in the last
``LOOKBACK_DAYS`` days was rolled back, could not be undone, failed, or never finished.
"""

from datetime import UTC, datetime, timedelta
from typing import Optional

import dagster as dg

from dbguard_pipeline import services
from dbguard_pipeline.defs.audit_steps import TableRow, table_value
from dbguard_pipeline.defs.fix_migrations import migrations_dir
from dbguard_pipeline.defs.isolation import isolation_report
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_pipeline.errors import DbguardError

JOB = "apply_approved_migrations"
LOOKBACK_DAYS = 7
NOT_OK = ("rolled_back_on_regression", "rollback_failed", "failed", "started")


class ApplyApprovedConfig(dg.Config):
    """Where the migrations are, and what to back up. There is deliberately no list of names to apply."""

    migrations_dir: Optional[str] = None  # default: $DBGUARD_MIGRATIONS_DIR or migrations/
    backup: Optional[str] = None  # data | all | none; default: fix_backup of dbguard.yaml (data)
    dry_run: bool = False


@dg.op(
    description="Back up, apply, verify and (on regression) roll back every approved pending migration, in order.",
    tags={"kind": "postgres"},
)
def apply_approved(context: dg.OpExecutionContext, config: ApplyApprovedConfig, database: PostgresResource) -> int:
    folder = config.migrations_dir or migrations_dir()
    try:
        target = database.target()
        run = services.apply_approved(
            target.dsn,
            target.config,
            folder,
            backup=config.backup,
            dry_run=config.dry_run,
            via=f"dagster {JOB} {context.run_id[:8]}",
            log=context.log.info,
            alert=False,  # the run fails below and dbguard_alert_sensor alerts on it
        )
    except DbguardError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    rows: list[TableRow] = [
        {
            "migration": o.name,
            "outcome": o.outcome,
            "reason": o.reason,
            "backup": o.backup or "",
            "seconds": round(o.total_s, 2),
            "verdicts": " | ".join(o.verdicts),
        }
        for o in run.outcomes
    ]
    meta = {
        "database": dg.MetadataValue.text(target.name),
        "folder": dg.MetadataValue.path(folder),
        "applied": dg.MetadataValue.int(len(run.applied)),
        "rolled_back_or_failed": dg.MetadataValue.int(len(run.bad)),
        "waiting": dg.MetadataValue.int(sum(o.outcome == "skipped" for o in run.outcomes)),
        "outcomes": table_value(
            rows,
            [
                ("migration", "string", "file name without .sql"),
                ("outcome", "string", "applied+verified, rolled_back_on_regression, failed, skipped, ..."),
                ("reason", "string", "why (a regression's verdicts, or why it waits)"),
                ("backup", "string", "the backup taken before applying"),
                ("seconds", "float", "backup + apply + verify (+ rollback)"),
                ("verdicts", "string", "the live verification"),
            ],
        ),
    }
    context.add_output_metadata(meta)
    if run.bad:
        raise dg.Failure(
            description="; ".join(f"{o.name}: {o.outcome}: {o.reason}" for o in run.bad),
            metadata=meta,
            allow_retries=False,
        )
    return len(run.applied)


@dg.job(
    name=JOB,
    description="Apply the approved pending migrations (approval files in the migrations folder, committed "
    "through review): back up, apply, verify on the live database, roll back and restore on regression. "
    "Never applies an unapproved migration.",
    tags={"dbguard/kind": "apply-migrations"},
)
def apply_approved_migrations_job() -> None:
    apply_approved()


@dg.asset_check(
    asset=isolation_report,
    name="last_fix_outcomes",
    description=f"What dbguard fix and {JOB} did lately (dbguard.fix_outcomes): fails (WARN) when the last "
    f"attempt of a migration in the last {LOOKBACK_DAYS} days was rolled back, failed or never finished.",
)
def last_fix_outcomes(database: PostgresResource) -> dg.AssetCheckResult:
    try:
        rows = services.fix_outcomes(database.resolved_dsn(), limit=50)
    except DbguardError as exc:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, description=f"cannot read the outcomes: {exc}"
        )
    since = datetime.now(UTC) - timedelta(days=LOOKBACK_DAYS)
    latest: dict[str, object] = {}
    for r in rows:  # newest first
        latest.setdefault(r.name, r)
    bad = [r for r in rows if latest.get(r.name) is r and r.outcome in NOT_OK and r.started_at >= since]
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "; ".join(f"{r.name}: {r.outcome}: {r.reason}" for r in bad)
            if bad
            else f"{len(rows)} recorded attempt(s), none rolled back or failed in the last {LOOKBACK_DAYS} days"
        ),
        metadata={
            "attempts": dg.MetadataValue.int(len(rows)),
            "not_ok": dg.MetadataValue.int(len(bad)),
            "outcomes": table_value(
                [
                    {
                        "migration": r.name,
                        "outcome": r.outcome,
                        "reason": r.reason,
                        "started_at": f"{r.started_at:%Y-%m-%d %H:%M:%S %Z}",
                        "approved_by": r.approved_by or "",
                        "via": r.via,
                        "data_restored": "" if r.data_restored is None else str(r.data_restored).lower(),
                    }
                    for r in rows
                ],
                [
                    ("migration", "string", ""),
                    ("outcome", "string", ""),
                    ("reason", "string", ""),
                    ("started_at", "string", ""),
                    ("approved_by", "string", "from the approval record"),
                    ("via", "string", "dbguard fix, or the Dagster run"),
                    ("data_restored", "string", "the backup was restored after the rollback"),
                ],
            ),
        },
    )
