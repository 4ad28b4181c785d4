"""The fleet beyond the audit: each database's isolation probe, the fleet ranking, and the fleet job on
Celery workers.

- ``probe_step``: the isolation probe of one fleet database (on the audit's snapshot), as the
  ``fleet/isolation_report`` partition and its ``no_cross_tenant_leaks`` check; the fleet job's
  ``audit_database`` step runs it after the audit, ``fleet_isolation_report`` materializes one partition.
- ``fleet_ranking`` (group ``dbguard_fleet``): every database of ``databases:`` ranked by cross-tenant leaks
  and critical findings, worst first, with the trend over the previous nights (kept in the ranking's own
  metadata, so it works with any instance storage). ``fleet_ranking_job`` runs it; ``fleet_ranking_sensor``
  requests it after every fleet run, failed or not (a database that fails fails the fleet run).
- ``build_fleet_celery_job``: the fleet job on dagster-celery's executor (extra ``[celery]``), defined only
  when dagster_celery is installed.
"""

import importlib.util
from typing import Any, Optional

import dagster as dg

from dbguard_pipeline.defs.assets import (
    CODE_VERSION,
    DB_RETRY,
    FLEET_GROUP,
    FLEET_PARTITIONS,
    KINDS,
    OWNERS,
    user_errors,
)
from dbguard_pipeline.defs.audit_steps import ERROR, CheckDef, CheckOutcome, StepOutput, table_value
from dbguard_pipeline.defs.resources import FleetResource, Target, fleet_targets

K_SNAPSHOT = dg.AssetKey(["fleet", "schema_snapshot"])
K_RLS = dg.AssetKey(["fleet", "rls_audit"])
K_INTEGRITY = dg.AssetKey(["fleet", "data_integrity"])
K_ISOLATION = dg.AssetKey(["fleet", "isolation_report"])
K_RANKING = dg.AssetKey(["fleet", "fleet_ranking"])
LEAK_CHECK = CheckDef(
    "no_cross_tenant_leaks", "ERROR: an isolation probe of this database leaked (every witness listed).", True
)
RANKING_JOB = "fleet_ranking_job"
TOP = 10  # the ranking's table lists every database; the description names the worst TOP
HISTORY = 14  # nights of scores the ranking keeps per database


# --------------------------------------------------------------------------- the probe of one database
def probe_step(target: Target, snapshot=None) -> StepOutput:
    """The isolation probe of one database, as the rest of its audit: value, metadata and the leak check.
    A database error the probe did not translate fails with its one-line reason, never a traceback."""
    import psycopg

    from dbguard_pipeline import services
    from dbguard_pipeline.defs.isolation import leak_check_metadata, report_metadata

    with user_errors("isolation probe", target.name, target.partition):
        try:
            report = services.probe(target.dsn, target.config, snapshot=snapshot)
        except psycopg.Error as exc:
            reason = " ".join(str(getattr(exc.diag, "message_primary", None) or exc).split())
            metadata = {"database": dg.MetadataValue.text(target.name)}
            if target.partition:
                metadata["partition"] = dg.MetadataValue.text(target.partition)
            raise dg.Failure(
                description=f"isolation probe failed: {target.partition or target.name}: {reason}",
                metadata=metadata,
                allow_retries=False,
            ) from None
    leaks = report.leaking_tables()
    check = CheckOutcome(
        LEAK_CHECK.name,
        not report.leaks,
        ERROR,
        f"{len(report.leaks)} cross-tenant leak{'s' if len(report.leaks) != 1 else ''} in {len(leaks)} relation"
        f"{'s' if len(leaks) != 1 else ''}" + (f": {', '.join(leaks[:5])}" if leaks else ""),
        leak_check_metadata(report),
    )
    return StepOutput(report, report_metadata(report, target.name), (check,))


@dg.asset(
    key=K_ISOLATION,
    deps=[K_SNAPSHOT],
    partitions_def=FLEET_PARTITIONS,
    group_name=FLEET_GROUP,
    kinds=KINDS,
    owners=OWNERS,
    code_version=CODE_VERSION,
    retry_policy=DB_RETRY,
    check_specs=[dg.AssetCheckSpec(LEAK_CHECK.name, asset=K_ISOLATION, description=LEAK_CHECK.description)],
    description="Tenant isolation of each database of the fleet proven by trying it (one partition per database): "
    "as the application role with tenant A's context, reads and writes against tenant B's rows, rolled back.",
)
def fleet_isolation_report(context: dg.AssetExecutionContext, fleet: FleetResource):
    key = context.partition_key
    with user_errors("loading the configuration and database target", key, key):
        target = fleet.target(key)
    out = probe_step(target)
    yield dg.Output(out.value, metadata=dict(out.metadata))
    for o in out.checks:
        yield o.result(K_ISOLATION)


# --------------------------------------------------------------------------- the ranking
def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> Optional[dict[str, Any]]:
    flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
    records = instance.fetch_materializations(flt, limit=1).records
    mat = records[0].asset_materialization if records else None
    if mat is None:
        return None
    return {"run_id": records[0].run_id, **{k: v.value for k, v in mat.metadata.items()}}


def _number(md: Optional[dict[str, Any]], key: str) -> Optional[int]:
    value = md.get(key) if md else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def fleet_scores(instance: dg.DagsterInstance, names: list[str]) -> list[dict[str, Any]]:
    """Each database's latest audited state: leaks (probe), critical findings (schema + data), warnings."""
    rows = []
    for name in names:
        rls, data, probe = (_latest(instance, k, name) for k in (K_RLS, K_INTEGRITY, K_ISOLATION))
        crit = [n for n in (_number(rls, "critical"), _number(data, "critical")) if n is not None]
        warn = [n for n in (_number(rls, "warning"), _number(data, "warning")) if n is not None]
        rows.append(
            {
                "database": name,
                "leaks": _number(probe, "leaks"),
                "critical": sum(crit) if crit else None,
                "warning": sum(warn) if warn else None,
                "audited": rls is not None,
            }
        )
    return rows


def _sort_key(row: dict[str, Any]):
    # worst first: leaks, then critical findings, then warnings; a database never audited goes last
    return (not row["audited"], -(row["leaks"] or 0), -(row["critical"] or 0), -(row["warning"] or 0), row["database"])


def _trend(history: list[list[int]]) -> str:
    """'new', or the leaks/critical of the previous nights, oldest first, ending with tonight's."""
    if len(history) < 2:
        return "new"
    before, now = history[-2], history[-1]
    arrow = "worse" if now > before else "better" if now < before else "same"
    shown = " -> ".join(f"{leaks}/{crit}" for leaks, crit in history[-5:])
    return f"{arrow} ({shown})"


RANKING_COLUMNS = (
    ("rank", "int", "1 = worst"),
    ("database", "string", "the name under databases: in dbguard.yaml"),
    ("leaks", "int", "cross-tenant leaks the isolation probe found (empty: not probed)"),
    ("critical", "int", "critical findings, schema and data (empty: not audited)"),
    ("warning", "int", "warnings, schema and data"),
    ("trend", "string", "against the previous rankings: leaks/critical per night, oldest first"),
)


@dg.asset(
    key=K_RANKING,
    deps=[K_RLS, K_INTEGRITY, K_ISOLATION],
    group_name=FLEET_GROUP,
    kinds=KINDS,
    owners=OWNERS,
    code_version=CODE_VERSION,
    description="The fleet's databases ranked by cross-tenant leaks, then critical findings, then warnings, worst "
    "first, with the trend over the previous nights; from each database's latest fleet/... materializations.",
)
def fleet_ranking(context: dg.AssetExecutionContext, fleet: FleetResource) -> dg.MaterializeResult:
    with user_errors("reading the fleet from the configuration"):
        names = [t.name for t in fleet_targets(fleet.load_config())]
    rows = sorted(fleet_scores(context.instance, names), key=_sort_key)
    previous = _latest_unpartitioned(context.instance, K_RANKING)
    before = previous.get("history") if previous else None
    before = before if isinstance(before, dict) else {}
    history: dict[str, list[list[int]]] = {}
    table = []
    for rank, row in enumerate(rows, 1):
        past = [list(h) for h in before.get(row["database"], []) if isinstance(h, list) and len(h) == 2]
        if row["audited"]:
            past.append([row["leaks"] or 0, row["critical"] or 0])
        history[row["database"]] = past[-HISTORY:]
        table.append({**{k: row[k] for k in ("database", "leaks", "critical", "warning")}, "rank": rank})
        table[-1]["trend"] = _trend(history[row["database"]]) if row["audited"] else "not audited"
    worst = [r["database"] for r in table[:TOP] if (r["leaks"] or 0) + (r["critical"] or 0) > 0]
    context.log.info(f"fleet ranking: {len(table)} databases; worst: {', '.join(worst) or 'none'}")
    return dg.MaterializeResult(
        metadata={
            "databases": dg.MetadataValue.int(len(table)),
            "with_leaks": dg.MetadataValue.int(sum(1 for r in table if r["leaks"])),
            "with_critical": dg.MetadataValue.int(sum(1 for r in table if r["critical"])),
            "not_audited": dg.MetadataValue.int(sum(1 for r in rows if not r["audited"])),
            "worst": dg.MetadataValue.json(worst),
            "ranking": table_value(table, RANKING_COLUMNS),
            "history": dg.MetadataValue.json(history),
        }
    )


def _latest_unpartitioned(instance: dg.DagsterInstance, key: dg.AssetKey) -> Optional[dict[str, Any]]:
    records = instance.fetch_materializations(key, limit=1).records
    mat = records[0].asset_materialization if records else None
    return {k: v.value for k, v in mat.metadata.items()} if mat is not None else None


fleet_ranking_job = dg.define_asset_job(
    RANKING_JOB,
    selection=dg.AssetSelection.assets(K_RANKING),
    description="Rank the fleet's databases (fleet/fleet_ranking); requested after every fleet run.",
)


def build_ranking_sensor(fleet_jobs) -> dg.SensorDefinition:
    """Requests the ranking after each fleet run that succeeded or failed (a failed database fails the run)."""

    @dg.run_status_sensor(
        name="fleet_ranking_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=list(fleet_jobs),
        request_job=fleet_ranking_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="After each successful fleet run, rank the fleet (failed runs: fleet_ranking_after_failure).",
    )
    def fleet_ranking_sensor(context: dg.RunStatusSensorContext):
        return dg.RunRequest(run_key=f"ranking:{context.dagster_run.run_id}")

    return fleet_ranking_sensor


def build_ranking_failure_sensor(fleet_jobs) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="fleet_ranking_after_failure",
        monitored_jobs=list(fleet_jobs),
        request_job=fleet_ranking_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="After each failed fleet run (some database failed), rank the fleet.",
    )
    def fleet_ranking_after_failure(context: dg.RunFailureSensorContext):
        return dg.RunRequest(run_key=f"ranking:{context.dagster_run.run_id}")

    return fleet_ranking_after_failure


# --------------------------------------------------------------------------- Celery
CELERY_JOB = "fleet_audit_celery_job"


def celery_available() -> bool:
    return importlib.util.find_spec("dagster_celery") is not None


def build_fleet_celery_job(graph: dg.GraphDefinition) -> dg.JobDefinition:
    """The fleet job on Celery workers: the same graph (one step per database), dagster-celery's executor.
    Broker and backend come from the run config (``execution: config: broker: redis://...``); steps are
    acknowledged late so that a worker that dies mid-step leaves its task to another worker."""
    from dagster_celery import celery_executor

    return graph.to_job(
        name=CELERY_JOB,
        executor_def=celery_executor,
        tags={"dbguard/kind": "audit"},
        config={
            "execution": {
                "config": {
                    "config_source": {
                        "task_acks_late": True,
                        "task_reject_on_worker_lost": True,
                        "broker_transport_options": {"visibility_timeout": 600},
                    }
                }
            }
        },
        description="The fleet audit (same graph as fleet_audit_job) on dagster-celery's executor: each "
        "database's step is a Celery task any worker may run; a worker lost mid-step returns its task to the "
        "queue (acks_late). Broker and backend: execution.config.broker / backend of the run config.",
    )
