"""Fix migrations in Dagster: the ``generate_fix_migrations`` job and the sensor that launches it.

Job ``generate_fix_migrations`` (resource ``database``: :class:`PostgresResource`), five ops:
  plan_fixes -> render_migrations -> lint_migrations -> round_trip_migrations -> write_migration_files
i.e. plan from the audit's findings on a fresh snapshot (one migration per table and action, findings that a
migration file in the folder already fixes are skipped), render, lint with squawk and pglast, apply / check /
roll back each one on a scratch copy of the database, and only then write the files. Nothing is applied to
the audited database: the files wait for review (``dbguard migrate up``).

Sensor ``fix_migrations_sensor``: an asset sensor on ``rls_audit``. It reads the materialization's
``finding_keys`` metadata (``{cache_key: severity}``, written by the audit asset), keeps the fixable ones
(:data:`~dbguard_pipeline.fixes.generate.FIXABLE`) that no migration file in the folder names, and
requests a run whose run key is a hash of those cache keys, so the same findings never launch it twice.
The folder is ``$DBGUARD_MIGRATIONS_DIR`` (default ``migrations``), for the sensor and the job alike.
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import dagster as dg

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
class FixPlan:
    migrations: list  # dbguard_pipeline.fixes.plan.Migration
    out_dir: str
    timestamp: str
    round_trip: bool
    texts: Optional[dict] = None  # {file name: SQL}, once rendered


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in columns]))


@dg.op(description="Plan one fix migration per table and action from the audit's findings on a fresh snapshot.")
def plan_fixes(context: dg.OpExecutionContext, config: FixMigrationsConfig, database: PostgresResource) -> FixPlan:
    from dbguard_pipeline.pg.catalog import introspect
    from dbguard_pipeline.fixes import script as mfiles
    from dbguard_pipeline.fixes.generate import build_context, plan_all

    target = database.target()
    cfg = target.config
    out_dir = config.out_dir or migrations_dir()
    snapshot = introspect(target.dsn, cfg.schemas or None, statement_timeout_ms=cfg.statement_timeout_ms,
                          lock_timeout_ms=cfg.lock_timeout_ms)
    ctx = build_context(snapshot, cfg, target.dsn)
    findings = ctx.findings or []
    if config.cache_keys:
        wanted = set(config.cache_keys)
        findings = [f for f in findings if f.cache_key in wanted]
    planned = plan_all(ctx, findings, pending_fixes=mfiles.pending_fixes(out_dir, mfiles.applied_names(target.dsn)))
    for line in planned.skipped:
        context.log.info(f"skipped: {line}")
    context.add_output_metadata({
        "database": dg.MetadataValue.text(target.name),
        "migrations": dg.MetadataValue.int(len(planned.migrations)),
        "skipped": dg.MetadataValue.int(len(planned.skipped)),
        "plan": _table([{"action": m.action, "table": m.qualified, "fixes": ", ".join(m.fixes)}
                        for m in planned.migrations], [("action", "string"), ("table", "string"), ("fixes", "string")]),
    })
    return FixPlan(planned.migrations, out_dir, mfiles.timestamp(config.timestamp), config.round_trip)


@dg.op(description="Render the forward and rollback SQL of each planned migration (deterministic templates).")
def render_migrations(context: dg.OpExecutionContext, plan: FixPlan) -> FixPlan:
    from dbguard_pipeline.fixes import script as mfiles

    plan.texts = mfiles.rendered(plan.migrations, plan.timestamp)
    context.add_output_metadata({"files": dg.MetadataValue.int(len(plan.texts))})
    return plan


@dg.op(description="Lint every file with squawk (zero violations required) and the PostgreSQL parser (pglast).")
def lint_migrations(context: dg.OpExecutionContext, plan: FixPlan) -> FixPlan:
    from dbguard_pipeline.fixes.lint import lint_texts

    if not plan.texts:
        context.add_output_metadata({"squawk": dg.MetadataValue.text("nothing to lint")})
        return plan
    result = lint_texts(plan.texts)
    context.add_output_metadata({
        "squawk": dg.MetadataValue.text(result.summary()),
        "violations": dg.MetadataValue.int(len(result.violations)),
        "parse_errors": dg.MetadataValue.int(len(result.parse_errors)),
    })
    if not result.ok:
        raise dg.Failure(description=f"generated SQL failed lint: {result.summary()}",
                         metadata={"details": dg.MetadataValue.md("\n".join(
                             f"- {v}" for v in [*map(str, result.violations), *result.parse_errors]))})
    return plan


@dg.op(description="Apply, check and roll back each migration on a scratch copy of the database.")
def round_trip_migrations(context: dg.OpExecutionContext, plan: FixPlan, database: PostgresResource) -> FixPlan:
    from dbguard_pipeline.fixes.sandbox import round_trip

    if not plan.migrations or not plan.round_trip:
        context.add_output_metadata({"round_trip": dg.MetadataValue.text("skipped")})
        return plan
    target = database.target()
    result = round_trip(target.dsn, plan.migrations, target.config)
    context.add_output_metadata({
        "round_trip": dg.MetadataValue.text(result.summary()),
        "passed": dg.MetadataValue.int(sum(t.ok for t in result.trips)),
        "failed": dg.MetadataValue.int(sum(not t.ok for t in result.trips)),
        "results": _table([{"action": t.action, "table": t.table, "ok": t.ok, "detail": t.line()} for t in result.trips],
                          [("action", "string"), ("table", "string"), ("ok", "bool"), ("detail", "string")]),
    })
    if not result.ok:
        raise dg.Failure(description=f"round trip failed: {result.summary()}: nothing written")
    return plan


@dg.op(description="Write the reviewed-to-be files into the migrations folder (all or none).")
def write_migration_files(context: dg.OpExecutionContext, plan: FixPlan) -> list[str]:
    from dbguard_pipeline.fixes import script as mfiles

    if not plan.texts:
        context.log.info("nothing to fix: no file written")
        context.add_output_metadata({"written": dg.MetadataValue.int(0)})
        return []
    written = [str(p) for p in mfiles.write_files(plan.out_dir, plan.texts)]
    context.add_output_metadata({
        "written": dg.MetadataValue.int(len(written)),
        "folder": dg.MetadataValue.path(os.path.abspath(plan.out_dir)),
        "files": dg.MetadataValue.md("\n".join(f"- `{os.path.basename(p)}`" for p in written)),
        "next": dg.MetadataValue.text(f"review, then: dbguard migrate up --dir {plan.out_dir}"),
    })
    return written


@dg.job(name="generate_fix_migrations",
        description="Plan, render, lint (squawk), round-trip test and write fix migrations for the audit's fixable "
                    "findings. Nothing is applied to the audited database: the files wait for review.",
        tags={"dbguard/kind": "fix-migrations"})
def generate_fix_migrations_job():
    write_migration_files(round_trip_migrations(lint_migrations(render_migrations(plan_fixes()))))


def fixable_keys(finding_keys) -> list[str]:
    """The fixable cache keys among the audit's ``finding_keys`` metadata (a {key: severity} map or a list)."""
    from dbguard_pipeline.fixes.generate import FIXABLE

    keys = list(finding_keys.keys()) if isinstance(finding_keys, dict) else list(finding_keys or [])
    return sorted(k for k in keys if isinstance(k, str) and k.split(":", 1)[0] in FIXABLE)


def run_key(keys: list[str]) -> str:
    return "fix-" + hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()[:24]


@dg.asset_sensor(asset_key=AUDIT_ASSET, job=generate_fix_migrations_job, name="fix_migrations_sensor",
                 minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
                 description="After each rls_audit materialization: launch generate_fix_migrations for the fixable "
                             "findings that no migration file names yet (run key = hash of their cache keys).")
def fix_migrations_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    from dbguard_pipeline.fixes.script import pending_fixes

    materialization = asset_event.asset_materialization
    metadata = materialization.metadata if materialization else {}
    raw = metadata.get("finding_keys")
    if raw is None:
        return dg.SkipReason("the rls_audit materialization has no finding_keys metadata")
    keys = fixable_keys(getattr(raw, "value", raw))
    out_dir = migrations_dir()
    pending = pending_fixes(out_dir)
    todo = [k for k in keys if k not in pending]
    if not todo:
        return dg.SkipReason(f"no fixable finding without a migration in {out_dir} ({len(keys)} fixable in the audit)")
    return dg.RunRequest(
        run_key=run_key(todo),
        run_config={"ops": {"plan_fixes": {"config": {"cache_keys": todo, "out_dir": out_dir}}}},
        tags={"dbguard/fixable_findings": str(len(todo))},
    )
