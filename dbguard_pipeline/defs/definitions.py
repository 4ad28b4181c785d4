"""The one place where dbguard's Dagster Definitions are composed (workspace.yaml loads this module).

- group ``dbguard_audit``: ``schema_snapshot`` -> ``rls_audit``, ``tenant_coverage``, ``data_integrity``,
  ``isolation_report``, ``rls_performance``, for the database of ``DBGUARD_DATABASE_URL`` (else the embedded
  demo database);
  ``nightly_audit_job`` and ``nightly_audit_schedule``;
- group ``dbguard_fleet``: the same assets under ``fleet/``, one partition per database of ``databases:`` in
  dbguard.yaml, plus ``fleet/isolation_report`` and ``fleet/fleet_ranking``; ``fleet_audit_job`` (one run,
  one process per database), ``fleet_audit_celery_job`` (the same on Celery workers, when dagster-celery is
  installed), ``fleet_audit_schedule``, ``fleet_ranking_job`` and its sensors (after each fleet run);
- ``dbguard_alert_sensor``: one alert per failing run; the fix-migration job and its sensor downstream of
  ``rls_audit`` (stopped until started; they write files, never apply them);
- ``apply_approved_migrations``: applies only approved migrations (backup, apply, verify, roll back on
  regression), and the ``last_fix_outcomes`` check on ``isolation_report`` shows its outcomes the next night;
- one more audit (assets, job, schedule) per ``DbguardDatabase`` component: a folder with a ``defs.yaml`` under
  ``dbguard_pipeline/defs/databases/`` (``[tool.dg.project] defs_module``) or ``$DBGUARD_DEFS_DIR``;
- freshness checks on every ``rls_audit`` (stale after 26 h) and the sensor that evaluates them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import dagster as dg

from dbguard_pipeline.defs import assets
from dbguard_pipeline.defs.apply_migrations import apply_approved_migrations_job, last_fix_outcomes
from dbguard_pipeline.defs.component import load_databases
from dbguard_pipeline.defs.fix_migrations import fix_migrations_sensor, generate_fix_migrations_job
from dbguard_pipeline.defs.fleet import (
    build_fleet_celery_job,
    build_ranking_failure_sensor,
    build_ranking_sensor,
    celery_available,
    fleet_isolation_report,
    fleet_ranking,
    fleet_ranking_job,
)
from dbguard_pipeline.defs.freshness import freshness_checks, freshness_sensor
from dbguard_pipeline.defs.isolation import isolation_checks, isolation_report
from dbguard_pipeline.defs.jobs import build_nightly_audit_job, fleet_audit_graph, fleet_audit_job
from dbguard_pipeline.defs.performance import performance_checks, rls_performance
from dbguard_pipeline.defs.resources import FleetResource, PostgresResource
from dbguard_pipeline.defs.schedules import build_schedules
from dbguard_pipeline.defs.sensors import dbguard_alert_sensor
from dbguard_pipeline.pg.dsn import ENV_DSN


def database_resource() -> PostgresResource:
    # The DSN comes from the environment at run time (never stored in the code location's config);
    # without it, the embedded demo database. The config file is read at run time too.
    if os.environ.get(ENV_DSN):
        return PostgresResource(dsn=dg.EnvVar(ENV_DSN))
    return PostgresResource()


DEFS_DIR_ENV = "DBGUARD_DEFS_DIR"
DEFAULT_DEFS_DIR = Path(__file__).resolve().parent / "databases"


def defs_dir() -> Path:
    """Where the ``DbguardDatabase`` components live: $DBGUARD_DEFS_DIR, else dbguard_pipeline/defs/databases."""
    return Path(os.environ.get(DEFS_DIR_ENV) or DEFAULT_DEFS_DIR)


def build_definitions(
    database: Optional[PostgresResource] = None,
    fleet: Optional[FleetResource] = None,
    config_path: Optional[str] = None,
    databases_dir: Optional[Path | str] = None,
) -> dg.Definitions:
    """The code location. Tests and custom deployments pass their own resources; ``config_path`` (default
    $DBGUARD_CONFIG or ./dbguard.yaml) is where the schedules read their cron expression; ``databases_dir``
    (default :func:`defs_dir`) holds the component-declared databases."""
    nightly = build_nightly_audit_job(["isolation_report", "rls_performance"])
    components = load_databases(databases_dir or defs_dir())
    # (the component tree hands checks back as AssetsDefinition holding check specs only)
    component_freshness = [
        c for c in components.asset_checks or () if any(spec.name == "freshness_check" for spec in c.check_specs)
    ]
    nightly_freshness = freshness_checks([dg.AssetKey("rls_audit")])
    fleet_jobs = [fleet_audit_job]
    if celery_available():  # the [celery] extra: the same fleet graph on Celery workers
        fleet_jobs.append(build_fleet_celery_job(fleet_audit_graph))
    base = dg.Definitions(
        assets=[
            *assets.audit_assets,
            isolation_report,
            rls_performance,
            *assets.fleet_assets,
            fleet_isolation_report,
            fleet_ranking,
        ],
        asset_checks=[*isolation_checks, last_fix_outcomes, *performance_checks, *nightly_freshness],
        jobs=[nightly, *fleet_jobs, fleet_ranking_job, generate_fix_migrations_job, apply_approved_migrations_job],
        schedules=build_schedules(nightly, fleet_audit_job, config_path),
        sensors=[
            dbguard_alert_sensor,
            fix_migrations_sensor,
            freshness_sensor([*nightly_freshness, *component_freshness]),
            build_ranking_sensor(fleet_jobs),
            build_ranking_failure_sensor(fleet_jobs),
        ],
        resources={"database": database or database_resource(), "fleet": fleet or FleetResource()},
    )
    return dg.Definitions.merge(base, components)


defs = build_definitions()


def resolve_job(name: str):
    """A job of the code location, for ``dg.build_reconstructable_job`` (the multiprocess executor re-imports
    the job in each step's process): ``build_reconstructable_job(__name__, "resolve_job", ("fleet_audit_job",))``."""
    return defs.resolve_job_def(name)
