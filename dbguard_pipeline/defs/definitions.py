"""The one place where dbguard's Dagster Definitions are composed (workspace.yaml loads this module).

- group ``dbguard_audit``: ``schema_snapshot`` -> ``rls_audit``, ``tenant_coverage``, ``data_integrity``,
  ``isolation_report``, ``rls_performance``, for the database of ``DBGUARD_DATABASE_URL`` (else the embedded
  demo database);
  ``nightly_audit_job`` and ``nightly_audit_schedule``;
- group ``dbguard_fleet``: the same assets under ``fleet/``, one partition per database of ``databases:`` in
  dbguard.yaml; ``fleet_audit_job`` (one run, one process per database) and ``fleet_audit_schedule``;
- ``dbguard_alert_sensor``: one alert per failing run; the fix-migration job and its sensor downstream of
  ``rls_audit``.
"""
from __future__ import annotations

import os
from typing import Optional

import dagster as dg

from dbguard_pipeline.pg.dsn import ENV_DSN
from dbguard_pipeline.defs import assets
from dbguard_pipeline.defs.fix_migrations import fix_migrations_sensor, generate_fix_migrations_job
from dbguard_pipeline.defs.isolation import isolation_checks, isolation_report
from dbguard_pipeline.defs.jobs import build_nightly_audit_job, fleet_audit_job
from dbguard_pipeline.defs.performance import performance_checks, rls_performance
from dbguard_pipeline.defs.resources import FleetResource, PostgresResource
from dbguard_pipeline.defs.schedules import build_schedules
from dbguard_pipeline.defs.sensors import dbguard_alert_sensor


def database_resource() -> PostgresResource:
    # The DSN comes from the environment at run time (never stored in the code location's config);
    # without it, the embedded demo database. The config file is read at run time too.
    if os.environ.get(ENV_DSN):
        return PostgresResource(dsn=dg.EnvVar(ENV_DSN))
    return PostgresResource()


def build_definitions(database: Optional[PostgresResource] = None, fleet: Optional[FleetResource] = None,
                      config_path: Optional[str] = None) -> dg.Definitions:
    """The code location. Tests and custom deployments pass their own resources; ``config_path`` (default
    $DBGUARD_CONFIG or ./dbguard.yaml) is where the schedules read their cron expression."""
    nightly = build_nightly_audit_job(["isolation_report", "rls_performance"])
    return dg.Definitions(
        assets=[*assets.audit_assets, isolation_report, rls_performance, *assets.fleet_assets],
        asset_checks=[*isolation_checks, *performance_checks],
        jobs=[nightly, fleet_audit_job, generate_fix_migrations_job],
        schedules=build_schedules(nightly, fleet_audit_job, config_path),
        sensors=[dbguard_alert_sensor, fix_migrations_sensor],
        resources={"database": database or database_resource(), "fleet": fleet or FleetResource()},
    )


defs = build_definitions()


def resolve_job(name: str):
    """A job of the code location, for ``dg.build_reconstructable_job`` (the multiprocess executor re-imports
    the job in each step's process): ``build_reconstructable_job(__name__, "resolve_job", ("fleet_audit_job",))``."""
    return defs.resolve_job_def(name)
