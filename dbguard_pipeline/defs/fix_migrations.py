"""Fix migrations in Dagster: the ``generate_fix_migrations`` job and the sensor that launches it.

Job ``generate_fix_migrations`` (resource ``database``: :class:`PostgresResource`), five ops:
  plan_fixes -> render_migrations -> lint_migrations -> round_trip_migrations -> write_migration_files
i.e. plan from the audit's findings on a fresh snapshot (one migration per table and action, findings that a
migration file in the folder already fixes are skipped), render, lint with squawk and pglast, apply / check /
roll back each one on a scratch copy of the database, and only then write the files. Nothing is applied to
the audited database: the files wait for review (``dbguard migrate up``).

Sensor ``fix_migrations_sensor``: an asset sensor on ``rls_audit``. It reads the materialization's
``finding_keys`` metadata (``{cache_key: severity}``, written by the audit asset), keeps the fixable ones
(:data:`~dbguard_pipeline.fixes.select.FIXABLE`) that no migration file in the folder names, and
requests a run whose run key is a hash of those cache keys, so the same findings never launch it twice.
The folder is ``$DBGUARD_MIGRATIONS_DIR`` (default ``migrations``), for the sensor and the job alike.
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import dagster as dg

from dbguard_pipeline import services
from dbguard_pipeline.defs.resources import PostgresResource

MIGRATIONS_DIR_ENV = "DBGUARD_MIGRATIONS_DIR"
AUDIT_ASSET = dg.AssetKey("rls_audit")


def migrations_dir() -> str:
    return os.environ.get(MIGRATIONS_DIR_ENV) or "migrations"


class FixMigrationsConfig(dg.Config):
    """What to fix and where to write. Empty ``cache_keys``: every fixable finding of the fresh audit."""

    cache_keys: list[str] = []
    out_dir: Optional[str] = None  # default: $DBGUARD_MIGRATIONS_DIR or migrations/
    round_trip: bool = True
    timestamp: Optional[str] = None  # YYYYMMDDHHMMSS; default: now (UTC)


@dataclass
class FixRun:
    """What the ops hand each other: the service's result so far, and whether the round trip is wanted."""

    fixes: services.GeneratedFixes
    round_trip: bool


def _table(rows: list[dict[str, str | int | float | bool | None]], columns: list[tuple[str, str]]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in columns]))


@dg.op(description="Plan one fix migration per table and action from the audit's findings on a fresh snapshot.")
def plan_fixes(context: dg.OpExecutionContext, config: FixMigrationsConfig, database: PostgresResource) -> FixRun:
    target = database.target()
    fixes = services.plan_fixes(target.dsn, target.config, cache_keys=config.cache_keys,
                                out_dir=config.out_dir or migrations_dir(), timestamp=config.timestamp)
    for line in fixes.skipped:
        context.log.info(f"skipped: {line}")
    context.add_output_metadata({
        "database": dg.MetadataValue.text(target.name),
        "migrations": dg.MetadataValue.int(len(fixes.migrations)),
        "skipped": dg.MetadataValue.int(len(fixes.skipped)),
        "plan": _table([{"action": m.action, "table": m.qualified, "fixes": ", ".join(m.fixes)}
                        for m in fixes.migrations], [("action", "string"), ("table", "string"), ("fixes", "string")]),
    })
    return FixRun(fixes, config.round_trip)


@dg.op(description="Render the forward and rollback SQL of each planned migration (deterministic templates).")
def render_migrations(context: dg.OpExecutionContext, run: FixRun) -> FixRun:
    services.render_fixes(run.fixes)
    context.add_output_metadata({"files": dg.MetadataValue.int(len(run.fixes.texts))})
    return run


@dg.op(description="Lint every file with squawk (zero violations required) and the PostgreSQL parser (pglast).")
def lint_migrations(context: dg.OpExecutionContext, run: FixRun) -> FixRun:
    if not run.fixes.texts:
        context.add_output_metadata({"squawk": dg.MetadataValue.text("nothing to lint")})
        return run
    result = services.lint_fixes(run.fixes).lint
    assert result is not None
    context.add_output_metadata({
        "squawk": dg.MetadataValue.text(result.summary()),
        "violations": dg.MetadataValue.int(len(result.violations)),
        "parse_errors": dg.MetadataValue.int(len(result.parse_errors)),
    })
    if not result.ok:
        raise dg.Failure(description=f"generated SQL failed lint: {result.summary()}",
                         metadata={"details": dg.MetadataValue.md("\n".join(
                             f"- {v}" for v in [*map(str, result.violations), *result.parse_errors]))})
    return run


@dg.op(description="Apply, check and roll back each migration on a scratch copy of the database.")
def round_trip_migrations(context: dg.OpExecutionContext, run: FixRun, database: PostgresResource) -> FixRun:
    if not run.fixes.migrations or not run.round_trip:
        context.add_output_metadata({"round_trip": dg.MetadataValue.text("skipped")})
        return run
    target = database.target()
    result = services.round_trip_fixes(target.dsn, target.config, run.fixes, mode="yes").round_trip
    if result is None:  # no scratch copy could be made
        raise run.fixes.failure or dg.Failure(description="round trip did not run")
    context.add_output_metadata({
        "round_trip": dg.MetadataValue.text(result.summary()),
        "passed": dg.MetadataValue.int(sum(t.ok for t in result.trips)),
        "failed": dg.MetadataValue.int(sum(not t.ok for t in result.trips)),
        "results": _table([{"action": t.action, "table": t.table, "ok": t.ok, "detail": t.line()} for t in result.trips],
                          [("action", "string"), ("table", "string"), ("ok", "bool"), ("detail", "string")]),
    })
    if not result.ok:
        raise dg.Failure(description=f"round trip failed: {result.summary()}: nothing written")
    return run


@dg.op(description="Write the reviewed-to-be files into the migrations folder (all or none).")
def write_migration_files(context: dg.OpExecutionContext, run: FixRun) -> list[str]:
    if not run.fixes.texts:
        context.log.info("nothing to fix: no file written")
        context.add_output_metadata({"written": dg.MetadataValue.int(0)})
        return []
    written = [str(p) for p in services.write_fixes(run.fixes).written]
    out_dir = run.fixes.out_dir
    context.add_output_metadata({
        "written": dg.MetadataValue.int(len(written)),
        "folder": dg.MetadataValue.path(os.path.abspath(out_dir)),
        "files": dg.MetadataValue.md("\n".join(f"- `{os.path.basename(p)}`" for p in written)),
        "next": dg.MetadataValue.text(f"review, then: dbguard migrate up --dir {out_dir}"),
    })
    return written


@dg.job(name="generate_fix_migrations",
        description="Plan, render, lint (squawk), round-trip test and write fix migrations for the audit's fixable "
                    "findings. Nothing is applied to the audited database: the files wait for review.",
        tags={"dbguard/kind": "fix-migrations"})
def generate_fix_migrations_job() -> None:
    write_migration_files(round_trip_migrations(lint_migrations(render_migrations(plan_fixes()))))


def _keys(finding_keys: object) -> list[str]:
    """The cache keys of the audit's ``finding_keys`` metadata (a {key: severity} map or a list)."""
    if isinstance(finding_keys, (dict, list, tuple, set, frozenset)):
        return [k for k in finding_keys if isinstance(k, str)]
    return []


def fixable_keys(finding_keys: object) -> list[str]:
    """The fixable cache keys among the audit's ``finding_keys`` metadata."""
    from dbguard_pipeline.fixes.select import fixable_keys as fixable

    return fixable(_keys(finding_keys))


def run_key(keys: list[str]) -> str:
    return "fix-" + hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()[:24]


@dg.asset_sensor(asset_key=AUDIT_ASSET, job=generate_fix_migrations_job, name="fix_migrations_sensor",
                 minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
                 description="After each rls_audit materialization: launch generate_fix_migrations for the fixable "
                             "findings that no migration file names yet (run key = hash of their cache keys). It writes files "
                             "into the migrations folder, so it is stopped until you start it.")
def fix_migrations_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
                          ) -> dg.SkipReason | dg.RunRequest:
    materialization = asset_event.asset_materialization
    metadata = materialization.metadata if materialization else {}
    raw = metadata.get("finding_keys")
    if raw is None:
        return dg.SkipReason("the rls_audit materialization has no finding_keys metadata")
    out_dir = migrations_dir()
    keys, todo = services.fixes_wanted(_keys(getattr(raw, "value", raw)), out_dir)
    if not todo:
        return dg.SkipReason(f"no fixable finding without a migration in {out_dir} ({len(keys)} fixable in the audit)")
    return dg.RunRequest(
        run_key=run_key(todo),
        run_config={"ops": {"plan_fixes": {"config": {"cache_keys": todo, "out_dir": out_dir}}}},
        tags={"dbguard/fixable_findings": str(len(todo))},
    )
