"""Freshness: the nightly audit is stale 26 hours after its last materialization (a day and a margin).

``freshness_checks`` builds Dagster's last-update freshness checks (ERROR, blocking) on the audits'
``rls_audit`` assets; ``freshness_sensor`` evaluates them (running by default, every 10 minutes). A stale
audit fails its check, the check's run fails (blocking), and ``dbguard_alert_sensor`` sends the alert like
any other failing check: a schedule that was stopped, or a daemon that is down, does not go unnoticed.
A database that was never audited counts as stale.

Why checks and not Dagster 1.13's ``FreshnessPolicy`` (which supersedes them): in open-source Dagster a
freshness policy is evaluated only with ``freshness: enabled`` in dagster.yaml and its alerts are a Dagster+
feature; a failing check fails a run, which reaches dbguard's own alert channels (Slack, webhook, log).
"""
from __future__ import annotations

import datetime
import warnings
from collections.abc import Sequence

import dagster as dg

STALE_AFTER = datetime.timedelta(hours=26)
FRESHNESS_SENSOR = "dbguard_freshness_sensor"


def freshness_checks(keys: Sequence[dg.AssetKey]) -> list[dg.AssetChecksDefinition]:
    with warnings.catch_warnings():  # superseded by FreshnessPolicy, see above
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return list(dg.build_last_update_freshness_checks(assets=list(keys), lower_bound_delta=STALE_AFTER,
                                                          severity=dg.AssetCheckSeverity.ERROR, blocking=True))


def freshness_sensor(checks: Sequence[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """One sensor for every freshness check (a component's come back from its Definitions as AssetsDefinition)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(freshness_checks=list(checks),  # type: ignore[arg-type]
                                                    name=FRESHNESS_SENSOR,
                                                    minimum_interval_seconds=600,
                                                    default_status=dg.DefaultSensorStatus.RUNNING,
                                                    tags={"dbguard/kind": "freshness"})
