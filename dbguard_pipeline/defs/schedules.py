"""Schedules: the nightly audit (cron and time zone from ``schedule:`` in dbguard.yaml, default 02:00 UTC)
of the database and of the fleet.

The cron expression is read when the code location loads (Dagster needs it to plan ticks). A config file
that cannot be read then does not take the code location down: the schedules keep the default time and
the run they request fails with the config error in its event log, which the alert sensor reports.
"""

import logging
from typing import Optional

import dagster as dg
from dagster._check import CheckError

from dbguard_pipeline.config import Config, ScheduleConfig, load_config
from dbguard_pipeline.defs.assets import FLEET_PARTITIONS_NAME
from dbguard_pipeline.defs.resources import fleet_targets
from dbguard_pipeline.errors import DbguardError

LOG = logging.getLogger("dbguard.defs")


def schedule_config(config_path: Optional[str] = None) -> ScheduleConfig:
    try:
        return load_config(config_path).schedule
    except DbguardError as exc:
        LOG.warning(f"dbguard: using the default schedule (02:00 UTC): {exc}")
        return ScheduleConfig()


def _run_key(prefix: str, context: dg.ScheduleEvaluationContext) -> str:
    try:
        when = context.scheduled_execution_time
    except CheckError:  # evaluated by hand (UI "test schedule", tests) without a scheduled time
        when = None
    return f"{prefix}:{when.isoformat() if when else 'manual'}"


def build_schedules(nightly_job, fleet_job, config_path: Optional[str] = None) -> list[dg.ScheduleDefinition]:
    sched = schedule_config(config_path)

    @dg.schedule(
        name="nightly_audit_schedule",
        job=nightly_job,
        cron_schedule=sched.cron,
        execution_timezone=sched.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Nightly audit of the database ({sched.cron}, {sched.timezone}; from schedule: in dbguard.yaml).",
    )
    def nightly_audit_schedule(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(run_key=_run_key("nightly", context), tags={"dbguard/trigger": "schedule"})

    @dg.schedule(
        name="fleet_audit_schedule",
        job=fleet_job,
        cron_schedule=sched.cron,
        execution_timezone=sched.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Nightly audit of every database under databases: in dbguard.yaml ({sched.cron}, "
        f"{sched.timezone}); skipped when none is listed. Stopped until you start it (UI: Automation, "
        "or `dagster schedule start fleet_audit_schedule -w workspace.yaml`).",
    )
    def fleet_audit_schedule(context: dg.ScheduleEvaluationContext):
        config: Optional[Config]
        try:
            config = load_config(config_path)
            names = [t.name for t in fleet_targets(config)]
        except DbguardError:
            config = None  # the run fails with the config error in its event log; the alert sensor reports it
        if config is not None:
            if not names:
                return dg.SkipReason("no databases listed under databases: in dbguard.yaml")
            known = set(context.instance.get_dynamic_partitions(FLEET_PARTITIONS_NAME))
            missing = [n for n in names if n not in known]
            if missing:
                context.instance.add_dynamic_partitions(FLEET_PARTITIONS_NAME, missing)
        return dg.RunRequest(run_key=_run_key("fleet", context), tags={"dbguard/trigger": "schedule"})

    return [nightly_audit_schedule, fleet_audit_schedule]
