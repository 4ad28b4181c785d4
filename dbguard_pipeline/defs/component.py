"""``DbguardDatabase``: a Dagster Component, so that a team adds a database to the nightly audit in YAML.

A folder under the defs folder (``dbguard_pipeline/defs/databases/`` or ``$DBGUARD_DEFS_DIR``) holding a
``defs.yaml``::

    type: dbguard_pipeline.defs.component.DbguardDatabase
    attributes:
      name: billing                      # letters, digits, underscores: the asset key prefix and group
      dsn_env: BILLING_DATABASE_URL      # the URL stays in the environment / secret store
      tenant:                            # the tenant model (tenant: of dbguard.yaml), only what differs
        column: org_id
        column_type: bigint
        tenants_table: public.orgs

gives that database the audit assets ``billing/schema_snapshot``, ``billing/rls_audit``,
``billing/tenant_coverage``, ``billing/data_integrity`` (group ``dbguard_billing``, with their checks),
the job ``billing_audit_job``, its nightly schedule and a freshness check, without a line of Python.
Everything else (thresholds, ignores, alerts) comes from dbguard.yaml (``config_path``, default
$DBGUARD_CONFIG or ./dbguard.yaml), read when each run starts.
"""
from __future__ import annotations

import json
import re
import sys
import types
import warnings
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
from dagster.components.scaffold.scaffold import scaffold_with
from pydantic import ValidationError

from dbguard_pipeline.config import Config, DatabaseTarget, TenantModel
from dbguard_pipeline.defs.assets import AUDIT_KEYS, build_audit_assets
from dbguard_pipeline.defs.resources import Target, target_dsn
from dbguard_pipeline.errors import ConfigError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class TenantSpec(dg.Model, dg.Resolvable):
    """The tenant model of this database; a field left out keeps the value of ``tenant:`` in dbguard.yaml
    (or dbguard's default). Same meaning as in dbguard.yaml."""

    column: Optional[str] = None
    column_type: Optional[str] = None
    tenants_table: Optional[str] = None
    tenants_key: Optional[str] = None
    context: Optional[Literal["guc", "jwt"]] = None
    guc: Optional[str] = None
    jwt_claim: Optional[str] = None
    context_functions: Optional[list[str]] = None
    app_role: Optional[str] = None
    app_role_owns_tables: Optional[bool] = None


class ComponentDatabaseResource(dg.ConfigurableResource):
    """One database declared by a ``DbguardDatabase`` component: its DSN from ``dsn_env``, dbguard.yaml from
    ``config_path``, with the component's tenant model laid over ``tenant:``."""

    name: str
    dsn_env: str
    config_path: Optional[str] = None
    tenant_json: str = "{}"  # the component's tenant fields, as JSON (resource config holds plain values)

    def load_config(self) -> Config:
        from dbguard_pipeline.config import load_config

        config = load_config(self.config_path)
        overrides = json.loads(self.tenant_json)
        if not overrides:
            return config
        try:
            tenant = TenantModel.model_validate({**config.tenant.model_dump(), **overrides})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"database {self.name!r} (defs.yaml): tenant.{loc}: {err['msg']}") from None
        return config.model_copy(update={"tenant": tenant})

    def target(self, partition_key: Optional[str] = None) -> Target:
        config = self.load_config()
        dsn = target_dsn(DatabaseTarget(name=self.name, dsn_env=self.dsn_env))
        return Target(name=self.name, dsn=dsn, config=config, partition=None)


class DbguardDatabaseScaffolder(dg.Scaffolder):
    """``dg scaffold defs dbguard_pipeline.defs.component.DbguardDatabase billing`` writes a defs.yaml to fill in."""

    def scaffold(self, request) -> None:
        name = re.sub(r"\W", "_", Path(request.target_path).name) or "app"
        dg.scaffold_component(request, {
            "name": name,
            "dsn_env": f"{name.upper()}_DATABASE_URL",
            "tenant": {"column": "tenant_id", "column_type": "uuid", "tenants_table": "public.tenants"},
        })


@scaffold_with(DbguardDatabaseScaffolder)
class DbguardDatabase(dg.Component, dg.Model, dg.Resolvable):
    """A database in dbguard's nightly audit: its audit assets and checks, a job, a nightly schedule and a
    freshness check (stale after 26 h), declared in defs.yaml."""

    name: str
    dsn_env: str
    tenant: Optional[TenantSpec] = None
    config_path: Optional[str] = None
    cron: Optional[str] = None  # default: schedule.cron of dbguard.yaml (02:00 UTC)
    timezone: Optional[str] = None
    schedule_running: bool = True  # the nightly schedule starts running (false: stopped until started)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return database_definitions(self)


def _checked_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"dbguard database name {name!r}: use letters, digits and underscores (it becomes the "
                          "asset key prefix and the group name), e.g. "
                          f"{re.sub(r'[^A-Za-z0-9_]', '_', name) or 'app'!r}")
    return name


def database_definitions(db: DbguardDatabase) -> dg.Definitions:
    from dbguard_pipeline.defs.freshness import freshness_checks
    from dbguard_pipeline.defs.jobs import AUDIT_JOB_TAGS
    from dbguard_pipeline.defs.schedules import schedule_config

    name = _checked_name(db.name)
    resource_key = f"dbguard_{name}"
    tenant = db.tenant.model_dump(exclude_none=True) if db.tenant else {}
    resource = ComponentDatabaseResource(name=name, dsn_env=db.dsn_env, config_path=db.config_path,
                                         tenant_json=json.dumps(tenant, sort_keys=True))
    assets = build_audit_assets(key_prefix=[name], resource_key=resource_key, group=f"dbguard_{name}",
                                scope=f"the {name} database (declared in defs.yaml; DSN from ${db.dsn_env})")
    job = dg.define_asset_job(
        f"{name}_audit_job", selection=dg.AssetSelection.assets(*[[name, k] for k in AUDIT_KEYS]),
        tags={**AUDIT_JOB_TAGS, "dbguard/database": name},
        description=f"Audit of {name} (declared in defs.yaml; DSN from ${db.dsn_env}): snapshot, RLS audit, "
                    "tenant coverage, data integrity and their checks.")
    sched = schedule_config(db.config_path)
    cron, tz = db.cron or sched.cron, db.timezone or sched.timezone
    schedule = dg.ScheduleDefinition(
        name=f"{name}_audit_schedule", job=job, cron_schedule=cron, execution_timezone=tz,
        default_status=dg.DefaultScheduleStatus.RUNNING if db.schedule_running else dg.DefaultScheduleStatus.STOPPED,
        tags={"dbguard/trigger": "schedule"},
        description=f"Nightly audit of {name} ({cron}, {tz}).")
    checks = freshness_checks([dg.AssetKey([name, "rls_audit"])])
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=[job], schedules=[schedule],
                          resources={resource_key: resource})


def load_databases(folder: Path | str) -> dg.Definitions:
    """The Definitions of every ``defs.yaml`` under ``folder`` (one sub-folder per database), loaded by Dagster's
    component tree exactly as ``dg`` loads a project's defs folder. An empty or missing folder: none."""
    from dagster.components.core.component_tree import ComponentTree

    path = Path(folder).resolve()
    if not path.is_dir() or not any(path.rglob("defs.yaml")):
        return dg.Definitions()
    module_name = "dbguard_databases_" + re.sub(r"\W", "_", str(path))[-80:]
    module = sys.modules.get(module_name)
    if module is None:  # a namespace for the folder (it need not be a Python package)
        module = types.ModuleType(module_name)
        module.__path__ = [str(path)]
        module.__file__ = str(path / "__init__.py")
        sys.modules[module_name] = module
    with warnings.catch_warnings():  # Dagster's own beta notices about the code references it adds
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster._utils.pydantic_yaml")
        return ComponentTree.from_module(module, project_root=path).build_defs()
