"""The alert sensor: one alert per failing run (a fleet run's one alert names each failed database once).

A blocking ERROR check that fails (critical findings, coverage below the threshold, a cross-tenant
leak, a regression) fails its step and so the run; so does a database that cannot be reached or a
config file with an error. ``dbguard_alert_sensor`` (a run failure sensor) reads the failed run's event
log, builds an :class:`~dbguard_pipeline.alerts.Alert` per database with the failing checks, the
errors, the findings summary and the run's UI link, and delivers it to the channels of ``alerts:`` in
dbguard.yaml. Runs are never alerted twice: the sensor's cursor moves past each run, and an alerted run
is tagged ``dbguard/alerted`` so that a reset cursor cannot replay it.
"""

import os
import re
from dataclasses import dataclass, field
from typing import Optional

import dagster as dg

from dbguard_pipeline.alerts import Alert, FailedCheck, deliver, fleet_digest
from dbguard_pipeline.config import AlertsConfig, load_config
from dbguard_pipeline.defs.fleet import CELERY_JOB
from dbguard_pipeline.defs.jobs import FLEET_JOB
from dbguard_pipeline.demo import DEMO_DATABASE
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.pg.dsn import ENV_DSN, describe_dsn, mask_secrets

ALERTED_TAG = "dbguard/alerted"
PARTITION_TAG = "dagster/partition"


def alerts_config(config_path: Optional[str] = None) -> AlertsConfig:
    """``alerts:`` of dbguard.yaml. When another section of the file is wrong, the alerts section alone
    is still used (so that the alert about the broken config reaches its channels); when the file cannot
    be read at all, alerts go to the log."""
    try:
        return load_config(config_path).alerts
    except DbguardError:
        pass
    import yaml

    try:
        path = config_path or os.environ.get("DBGUARD_CONFIG") or "dbguard.yaml"
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        return AlertsConfig.model_validate(data.get("alerts") or {})
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):  # ValueError: pydantic, UTF-8
        return AlertsConfig()


WEBSERVER_URL_ENV = "DBGUARD_WEBSERVER_URL"
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"


def webserver_url(cfg: AlertsConfig, environ=os.environ) -> str:
    """Where the Dagster UI is: ``alerts.webserver_url`` (or its older name ``ui_base_url``) of dbguard.yaml,
    else $DBGUARD_WEBSERVER_URL, else http://127.0.0.1:3000."""
    return cfg.webserver_url or cfg.ui_base_url or environ.get(WEBSERVER_URL_ENV) or DEFAULT_WEBSERVER_URL


def default_database_label() -> str:
    dsn = os.environ.get(ENV_DSN)
    return describe_dsn(dsn) if dsn else f"embedded demo database ({DEMO_DATABASE})"


@dataclass
class _Group:
    database: Optional[str] = None
    checks: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def collect_alerts(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    *,
    ui_base_url: str,
    default_database: Optional[str] = None,
    run_failure_message: str = "",
) -> list[Alert]:
    """The alerts a failed run deserves: one per database that failed (a fleet run may hold several)."""
    run_partition = run.tags.get(PARTITION_TAG)
    groups: dict[Optional[str], _Group] = {}

    def group(partition: Optional[str]) -> _Group:
        key = partition or run_partition
        return groups.setdefault(key, _Group(database=key))

    types = {
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
    }
    for entry in instance.all_logs(run.run_id, of_type=types):
        ev = entry.dagster_event
        if ev is None:
            continue
        if ev.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            data = ev.asset_check_evaluation_data
            if not data.passed and data.severity == dg.AssetCheckSeverity.ERROR:
                group(data.partition).checks.append(
                    FailedCheck(
                        check=data.check_name,
                        asset=data.asset_key.to_user_string(),
                        severity="ERROR",
                        description=_first_line(data.description or ""),
                        partition=data.partition,
                    )
                )
        elif ev.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = ev.step_materialization_data.materialization
            md = mat.metadata
            g = group(mat.partition)
            if "database" in md and not mat.partition:
                g.database = str(md["database"].value)
            if "finding_keys" in md:
                for k in ("critical", "warning", "info", "ignored"):
                    if k in md and isinstance(md[k].value, int):
                        g.summary[k] = g.summary.get(k, 0) + md[k].value
        elif ev.event_type == dg.DagsterEventType.STEP_FAILURE:
            failure = ev.step_failure_data
            if failure.error is not None and failure.error.cls_name == "DagsterAssetCheckFailedError":
                continue  # the failing checks themselves are listed
            partition = database = None
            if failure.user_failure_data is not None:
                md = failure.user_failure_data.metadata or {}
                partition = str(md["partition"].value) if "partition" in md else None
                database = str(md["database"].value) if "database" in md else None
                message = failure.user_failure_data.description or ""
            else:  # an exception other than dg.Failure: drop the "module.ClassName: " prefix
                message = re.sub(r"^[\w.]+: ", "", failure.error.message if failure.error else "")
            g = group(partition)
            if database and not g.database:
                g.database = database
            g.errors.append(_first_line(message) or f"step {ev.step_key} failed")
    if not groups:
        groups[run_partition] = _Group(
            database=run_partition, errors=[_first_line(run_failure_message) or "the run failed"]
        )
    base = ui_base_url.rstrip("/")
    alerts = []
    for key, g in groups.items():
        if not g.checks and not g.errors:
            continue
        alerts.append(
            Alert(
                database=mask_secrets(g.database or default_database or default_database_label()),
                job=run.job_name,
                run_id=run.run_id,
                run_url=f"{base}/runs/{run.run_id}",
                failed_checks=tuple(g.checks),
                errors=tuple(mask_secrets(e) for e in g.errors),
                summary=dict(g.summary),
                partition=key,
            )
        )
    if not alerts:  # failed without any failing check or step (e.g. the run worker died)
        alerts.append(
            Alert(
                database=default_database or default_database_label(),
                job=run.job_name,
                run_id=run.run_id,
                run_url=f"{base}/runs/{run.run_id}",
                errors=(mask_secrets(_first_line(run_failure_message) or "the run failed"),),
            )
        )
    return alerts


def alert_for_failed_run(context: dg.RunFailureSensorContext, config_path: Optional[str] = None) -> int:
    """Deliver the alerts of one failed run; returns how many were sent (0 when already alerted)."""
    run = context.dagster_run
    if run.tags.get(ALERTED_TAG):
        context.log.info(f"run {run.run_id} was already alerted")
        return 0
    cfg = alerts_config(config_path)
    alerts = collect_alerts(
        context.instance,
        run,
        ui_base_url=webserver_url(cfg),
        default_database="fleet" if run.job_name in (FLEET_JOB, CELERY_JOB) else None,
        run_failure_message=context.failure_event.message or "",
    )
    if run.job_name in (FLEET_JOB, CELERY_JOB) and len(alerts) > 1:
        alerts = [fleet_digest(alerts, job=run.job_name, run_id=run.run_id, run_url=alerts[0].run_url)]
    channels: list[str] = []
    for alert in alerts:
        results = deliver(alert, cfg)
        channels.extend(f"{r.channel}:{'ok' if r.ok else 'failed'}" for r in results)
        for r in results:
            if not r.ok:
                context.log.warning(f"alert channel {r.channel} failed: {r.detail}")
    context.instance.add_run_tags(run.run_id, {ALERTED_TAG: str(len(alerts))})
    context.log.info(f"alerted run {run.run_id}: {len(alerts)} alert(s) -> {', '.join(channels) or 'no channel'}")
    return len(alerts)


@dg.run_failure_sensor(
    name="dbguard_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="When an audit run fails (a blocking ERROR check, an unreachable database, a config error), "
    "send one alert per failing run (a fleet run's names each failed database) to the channels of alerts: in "
    "dbguard.yaml.",
)
def dbguard_alert_sensor(context: dg.RunFailureSensorContext):
    alert_for_failed_run(context)
