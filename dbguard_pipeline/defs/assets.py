"""Assets: the schema snapshot and the audit downstream of it, with their asset checks.

``build_audit_assets`` makes the same four assets for one database (keys ``schema_snapshot``,
``rls_audit``, ``tenant_coverage``, ``data_integrity``; resource ``database``) and for the fleet (keys
``fleet/...``, one dynamic partition per database of ``databases:`` in dbguard.yaml; resource ``fleet``).
``tenant_coverage`` and ``data_integrity`` come from one step so that each table is read once.
"""

import contextlib
import os
from collections.abc import Sequence
from typing import Any, Optional

import dagster as dg

from dbguard_pipeline.defs import audit_steps as steps
from dbguard_pipeline.defs.audit_steps import (
    COVERAGE_CHECKS,
    INTEGRITY_CHECKS,
    RLS_AUDIT_CHECKS,
    Previous,
)
from dbguard_pipeline.defs.resources import Target
from dbguard_pipeline.errors import ConnectionError_, DbguardError

GROUP = "dbguard_audit"
FLEET_GROUP = "dbguard_fleet"
OWNERS = ["team:platform"]
KINDS = {"postgres"}
FLEET_PARTITIONS_NAME = "dbguard_databases"
FLEET_PARTITIONS = dg.DynamicPartitionsDefinition(name=FLEET_PARTITIONS_NAME)
DATABASE_TAG = "dbguard/database"

# Bumped when what an asset computes changes (a new rule, a changed metric), so that the UI marks the
# materializations made by older code as stale ("code version changed").
CODE_VERSION = "dbguard-0.2"

# Steps that touch the database retry transient connection errors (refused, reset, timed out, the server
# starting up or restarting): 3 more tries, 10 s, 20 s, 40 s apart (+/- jitter). Anything else a user can fix
# (a wrong password, a missing database, a config error) fails at once: see ``user_errors``.
# DBGUARD_RETRY_MAX / DBGUARD_RETRY_DELAY_SECONDS (read when the code location loads) change both.
DB_RETRY = dg.RetryPolicy(
    max_retries=int(os.environ.get("DBGUARD_RETRY_MAX", "3")),
    delay=float(os.environ.get("DBGUARD_RETRY_DELAY_SECONDS", "10")),
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
_PERMANENT = (
    "wrong user name or password",
    "does not exist",
    "malformed database url",
    "empty database url",
    "permission denied",
    "could not start the embedded",
)


def transient(exc: DbguardError) -> bool:
    """A connection error that trying again later may cure (the database restarting, a network blip)."""
    if not isinstance(exc, ConnectionError_):
        return False
    text = str(exc).lower()
    return not any(marker in text for marker in _PERMANENT)


@contextlib.contextmanager
def user_errors(what: str, database: Optional[str] = None, partition: Optional[str] = None):
    """A DbguardError (bad input, unreachable database, timeout) fails the step with its one-line message.
    The failure's metadata names the database (display name) and, in the fleet, its partition, so that the
    alert sensor can say which database failed. A transient connection error may be retried (the step's
    RetryPolicy); every other error fails the step at once."""
    try:
        yield
    except DbguardError as exc:
        metadata = {}
        if database:
            metadata["database"] = dg.MetadataValue.text(database)
        if partition:
            metadata["partition"] = dg.MetadataValue.text(partition)
        prefix = f"{partition}: " if partition else ""
        raise dg.Failure(
            description=f"{what} failed: {prefix}{exc}", metadata=metadata, allow_retries=transient(exc)
        ) from None


def _target(context, resource_key: str, partitioned: bool) -> Target:
    resource = getattr(context.resources, resource_key)
    key = context.partition_key if partitioned else None
    with user_errors("loading the configuration and database target", key, key):
        return resource.target(key)


def _check_specs(asset_key: dg.AssetKey, defs: Sequence[steps.CheckDef]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(d.name, asset=asset_key, description=d.description, blocking=d.blocking) for d in defs]


def _emit_checks(outcomes, asset_key: dg.AssetKey, selected: Optional[set] = None):
    for o in outcomes:
        if selected is None or dg.AssetCheckKey(asset_key, o.name) in selected:
            yield o.result(asset_key)


def build_audit_assets(
    *,
    key_prefix: Sequence[str] = (),
    partitions_def: Optional[dg.PartitionsDefinition] = None,
    resource_key: str = "database",
    group: str = GROUP,
    retry_policy: Optional[dg.RetryPolicy] = DB_RETRY,
    scope: Optional[str] = None,
) -> list[dg.AssetsDefinition]:
    prefix = list(key_prefix)
    partitioned = partitions_def is not None
    k_snapshot = dg.AssetKey([*prefix, "schema_snapshot"])
    k_rls = dg.AssetKey([*prefix, "rls_audit"])
    k_cov = dg.AssetKey([*prefix, "tenant_coverage"])
    k_int = dg.AssetKey([*prefix, "data_integrity"])
    scope = scope or (
        "each database of the fleet (one partition per database)" if partitioned else "the audited database"
    )
    common: dict[str, Any] = dict(
        group_name=group,
        kinds=KINDS,
        owners=OWNERS,
        partitions_def=partitions_def,
        code_version=CODE_VERSION,
        retry_policy=retry_policy,
    )

    @dg.asset(
        key=k_snapshot,
        required_resource_keys={resource_key},
        **common,
        description=f"Schema snapshot of {scope}: tables, columns, constraints, indexes, RLS flags, policies, "
        "grants, views and functions, from a fixed number of read-only catalog queries.",
    )
    def schema_snapshot(context: dg.AssetExecutionContext):
        target = _target(context, resource_key, partitioned)
        with user_errors("schema snapshot", target.name, target.partition):
            out = steps.snapshot_step(target)
        s = out.value.summary()
        context.log.info(f"snapshot of {target.name}: {s['tables']} tables, {s['policies']} policies")
        return dg.Output(out.value, metadata=dict(out.metadata))

    @dg.asset(
        key=k_rls,
        ins={"snapshot": dg.AssetIn(k_snapshot)},
        required_resource_keys={resource_key},
        check_specs=_check_specs(k_rls, RLS_AUDIT_CHECKS),
        **common,
        description=f"Static audit of {scope}: RLS, tenancy, security and performance findings read from the "
        "schema alone (no table is scanned). Checks: critical findings (ERROR), warnings (WARN) and "
        "regressions against the previous materialization.",
    )
    def rls_audit(context: dg.AssetExecutionContext, snapshot):
        target = _target(context, resource_key, partitioned)
        previous = Previous.fetch(context.instance, k_rls, target.partition)
        with user_errors("RLS audit", target.name, target.partition):
            out = steps.rls_audit_step(target, snapshot, previous)
        yield dg.Output(out.value, metadata=dict(out.metadata))
        yield from _emit_checks(out.checks, k_rls, set(context.selected_asset_check_keys))

    outs = {
        "tenant_coverage": dg.AssetOut(
            key=k_cov,
            is_required=False,
            group_name=group,
            kinds=KINDS,
            owners=OWNERS,
            code_version=CODE_VERSION,
            description=f"Tenant data coverage of {scope}: per tenant table, rows and rows carrying a tenant, "
            "measured with one scan per table (TABLESAMPLE above the configured size, marked estimated).",
        ),
        "data_integrity": dg.AssetOut(
            key=k_int,
            is_required=False,
            group_name=group,
            kinds=KINDS,
            owners=OWNERS,
            code_version=CODE_VERSION,
            description=f"Data integrity of {scope}: orphaned rows, cross-tenant references, NULLs in required "
            "columns and the Great Expectations suites declared in the config.",
        ),
    }

    @dg.multi_asset(
        outs=outs,
        ins={"snapshot": dg.AssetIn(k_snapshot)},
        check_specs=_check_specs(k_cov, COVERAGE_CHECKS) + _check_specs(k_int, INTEGRITY_CHECKS),
        required_resource_keys={resource_key},
        partitions_def=partitions_def,
        can_subset=True,
        retry_policy=retry_policy,
        name="_".join([*prefix, "data_metrics"]),
        description="One pass of data metrics (each table read once) feeding tenant_coverage and data_integrity.",
    )
    def data_metrics(context: dg.AssetExecutionContext, snapshot):
        target = _target(context, resource_key, partitioned)
        selected = set(context.selected_asset_keys)
        checks = set(context.selected_asset_check_keys)
        prev_cov = Previous.fetch(context.instance, k_cov, target.partition) if k_cov in selected else None
        prev_int = Previous.fetch(context.instance, k_int, target.partition) if k_int in selected else None
        with user_errors("data metrics", target.name, target.partition):
            result = steps.data_audit(target, snapshot)
            cov = steps.coverage_step(target, result, prev_cov)
            integ = steps.integrity_step(target, result, prev_int)
        if k_cov in selected:
            yield dg.Output(cov.value, output_name="tenant_coverage", metadata=dict(cov.metadata))
        if k_int in selected:
            yield dg.Output(integ.value, output_name="data_integrity", metadata=dict(integ.metadata))
        yield from _emit_checks(cov.checks, k_cov, checks)
        yield from _emit_checks(integ.checks, k_int, checks)

    return [schema_snapshot, rls_audit, data_metrics]


schema_snapshot, rls_audit, data_metrics = build_audit_assets()
fleet_assets = build_audit_assets(
    key_prefix=["fleet"], partitions_def=FLEET_PARTITIONS, resource_key="fleet", group=FLEET_GROUP
)
audit_assets = [schema_snapshot, rls_audit, data_metrics]
AUDIT_KEYS = ("schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity")
