"""Jobs: the nightly audit of one database, and the fleet audit (one run, many databases, one process each).

``fleet_audit_job`` reads ``databases:`` from dbguard.yaml when it runs, registers each name as a
partition of the ``fleet/...`` assets, and fans out: one ``audit_database`` step per database (the audit,
then the isolation probe), run in parallel by the multiprocess executor (``fleet_audit_celery_job``: the same
graph on Celery workers). Each step records the materializations and check results of
its database's partition; a database that cannot be audited fails its own step with a one-line
message and the others carry on.
"""

import hashlib
import re

import dagster as dg

from dbguard_pipeline.defs import audit_steps as steps
from dbguard_pipeline.defs.assets import AUDIT_KEYS, DB_RETRY, FLEET_PARTITIONS_NAME, transient, user_errors
from dbguard_pipeline.defs.audit_steps import COVERAGE_CHECKS, INTEGRITY_CHECKS, RLS_AUDIT_CHECKS, Previous
from dbguard_pipeline.defs.fleet import LEAK_CHECK, probe_step
from dbguard_pipeline.errors import DbguardError

NIGHTLY_JOB = "nightly_audit_job"
FLEET_JOB = "fleet_audit_job"
AUDIT_JOB_TAGS = {"dbguard/kind": "audit"}


def audit_selection(extra_keys=()) -> dg.AssetSelection:
    return dg.AssetSelection.assets(*AUDIT_KEYS, *extra_keys)


def build_nightly_audit_job(extra_keys=()):
    return dg.define_asset_job(
        NIGHTLY_JOB,
        selection=audit_selection(extra_keys),
        tags=AUDIT_JOB_TAGS,
        description="Audit the database (DBGUARD_DATABASE_URL, else the embedded demo): snapshot, RLS audit, "
        "tenant coverage, data integrity and their checks. Run nightly by nightly_audit_schedule.",
    )


def mapping_key(name: str) -> str:
    """A dynamic-output key for a database name (letters, digits, underscores), unique per name."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)[:40]
    if safe != name:
        safe = f"{safe}_{hashlib.sha256(name.encode('utf-8')).hexdigest()[:6]}"
    return safe


@dg.op(
    out=dg.DynamicOut(str),
    required_resource_keys={"fleet"},
    tags={"kind": "postgres"},
    description="Read databases: from dbguard.yaml, register one partition per database, fan out.",
)
def discover_databases(context: dg.OpExecutionContext):
    with user_errors("reading the fleet from the configuration"):
        names = context.resources.fleet.names()
    if not names:
        raise dg.Failure(
            description="the configuration lists no databases (add them under databases: in dbguard.yaml)",
            allow_retries=False,
        )
    known = set(context.instance.get_dynamic_partitions(FLEET_PARTITIONS_NAME))
    missing = [n for n in names if n not in known]
    if missing:
        context.instance.add_dynamic_partitions(FLEET_PARTITIONS_NAME, missing)
    context.log.info(f"auditing {len(names)} databases: {', '.join(names)}")
    for name in names:
        yield dg.DynamicOutput(name, mapping_key=mapping_key(name))


def _emit(asset: str, out: steps.StepOutput, partition: str, blocking: dict):
    key = dg.AssetKey(["fleet", asset])
    yield dg.AssetMaterialization(asset_key=key, partition=partition, metadata=dict(out.metadata))
    for o in out.checks:
        yield o.evaluation(key, partition, blocking.get(o.name, False))


@dg.op(
    required_resource_keys={"fleet"},
    tags={"kind": "postgres"},
    retry_policy=DB_RETRY,
    description="Audit and probe one database of the fleet: snapshot, static audit, data metrics, isolation "
    "probe and their checks.",
)
def audit_database(context: dg.OpExecutionContext, name: str):
    with user_errors("audit", name, name):
        target = context.resources.fleet.target(name)
    instance = context.instance
    prev = {
        a: Previous.fetch(instance, dg.AssetKey(["fleet", a]), name)
        for a in ("rls_audit", "tenant_coverage", "data_integrity")
    }
    blocking_rls = {d.name: d.blocking for d in RLS_AUDIT_CHECKS}
    blocking_cov = {d.name: d.blocking for d in COVERAGE_CHECKS}
    blocking_int = {d.name: d.blocking for d in INTEGRITY_CHECKS}
    with user_errors("schema snapshot", name, name):
        snap = steps.snapshot_step(target)
    yield from _emit("schema_snapshot", snap, name, {})
    with user_errors("RLS audit", name, name):
        rls = steps.rls_audit_step(target, snap.value, prev["rls_audit"])
    yield from _emit("rls_audit", rls, name, blocking_rls)
    try:
        result = steps.data_audit(target, snap.value)
    except DbguardError as exc:
        raise dg.Failure(
            description=f"data metrics failed: {name}: {exc}",
            allow_retries=transient(exc),
            metadata={"database": dg.MetadataValue.text(name), "partition": dg.MetadataValue.text(name)},
        ) from None
    cov = steps.coverage_step(target, result, prev["tenant_coverage"])
    integ = steps.integrity_step(target, result, prev["data_integrity"])
    yield from _emit("tenant_coverage", cov, name, blocking_cov)
    yield from _emit("data_integrity", integ, name, blocking_int)
    probe = probe_step(target, snap.value)
    yield from _emit("isolation_report", probe, name, {LEAK_CHECK.name: LEAK_CHECK.blocking})
    summary = steps.count([*rls.value, *integ.value])
    summary["leaks"] = len(probe.value.leaks)
    context.log.info(f"{name}: {summary['critical']} critical, {summary['warning']} warnings, {summary['leaks']} leaks")
    yield dg.Output(summary)


@dg.graph(
    name="fleet_audit",
    description="Discover databases: of dbguard.yaml, then one audit_database step per database.",
)
def fleet_audit_graph():
    discover_databases().map(audit_database)


# Each step runs in a process forked from a server that imported the code location, the Postgres instance storage
# and the audit path once (forkserver, ``defs/preload.py``): a step then costs its own work, not a Python start-up,
# a Dagster import and a dagster-postgres import. Measured in bench/results.md ("Fleet at scale").
# max_concurrent defaults to the CPU count.
PRELOAD = ["dbguard_pipeline.defs.preload"]
FLEET_EXECUTION = {"execution": {"config": {"start_method": {"forkserver": {"preload_modules": PRELOAD}}}}}

fleet_audit_job = fleet_audit_graph.to_job(
    name=FLEET_JOB,
    executor_def=dg.multiprocess_executor,
    tags=AUDIT_JOB_TAGS,
    config=FLEET_EXECUTION,
    description="Audit and probe every database of databases: in dbguard.yaml in one run, one process per "
    "database (multiprocess executor, forked from a preloaded server); records the fleet/... assets' "
    "partitions and checks.",
)
