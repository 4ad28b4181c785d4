"""Dagster 1.13 conventions: what starts stopped, where the alert links point, code versions, retries of
transient connection errors, and the freshness check that alerts when the nightly audit stops."""
from __future__ import annotations

import time

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_factories.freshness_checks import last_update

from dbguard_pipeline.config import AlertsConfig
from dbguard_pipeline.defs.assets import CODE_VERSION
from dbguard_pipeline.defs.definitions import build_definitions, defs
from dbguard_pipeline.defs.freshness import FRESHNESS_SENSOR, STALE_AFTER
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_pipeline.defs.sensors import dbguard_alert_sensor, webserver_url
from dbguard_tests.dagster_support import local_receiver, run_nightly, sensor_tick, write_config

FRESHNESS = dg.AssetCheckKey(dg.AssetKey("rls_audit"), "freshness_check")


def test_what_writes_files_or_fans_out_starts_stopped_and_the_rest_runs():
    repo = defs.get_repository_def()
    assert repo.get_sensor_def("fix_migrations_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    assert repo.get_schedule_def("fleet_audit_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
    assert repo.get_schedule_def("nightly_audit_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
    assert repo.get_sensor_def("dbguard_alert_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert repo.get_sensor_def(FRESHNESS_SENSOR).default_status == dg.DefaultSensorStatus.RUNNING


def test_the_alert_link_comes_from_the_configured_webserver_url():
    env = {"DBGUARD_WEBSERVER_URL": "http://127.0.0.1:3917"}
    assert webserver_url(AlertsConfig(), env) == "http://127.0.0.1:3917"  # what `make dev` sets
    assert webserver_url(AlertsConfig(webserver_url="https://dagster.internal"), env) == "https://dagster.internal"
    assert webserver_url(AlertsConfig(ui_base_url="https://old.name"), env) == "https://old.name"
    assert webserver_url(AlertsConfig(), {}) == "http://127.0.0.1:3000"


def test_database_steps_carry_a_code_version_and_a_retry_policy():
    graph = defs.resolve_asset_graph()
    for key in ("schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity", "isolation_report",
                "fleet/rls_audit"):
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert node.code_version == CODE_VERSION, key
        policy = node.assets_def.op.retry_policy
        assert policy is not None and policy.max_retries >= 1, key
    fleet_job = defs.resolve_job_def("fleet_audit_job")
    assert fleet_job.graph.node_named("audit_database").definition.retry_policy is not None


def _retries(result) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in result.all_events:
        if e.event_type_value == "STEP_UP_FOR_RETRY":
            out[e.step_key] = out.get(e.step_key, 0) + 1
    return out


@pytest.mark.integration
def test_a_refused_connection_is_retried_and_a_config_error_is_not(demo_dsn, tmp_path):
    with dg.instance_for_test() as instance:
        down = run_nightly(instance, "postgresql://app:pw@127.0.0.1:1/prod")
        assert not down.success
        assert _retries(down) == {"schema_snapshot": 3}  # transient: tried 4 times in all
        bad = tmp_path / "dbguard.yaml"
        bad.write_text("coverage_threshold: 250\n")
        broken = run_nightly(instance, demo_dsn, str(bad))
        assert not broken.success
        assert _retries(broken) == {}  # a mistake in the config does not go away by waiting


def _run_freshness_check(defs_: dg.Definitions, instance) -> dg.ExecuteInProcessResult:
    job = defs_.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(),
                                                                   asset_check_selection={FRESHNESS})
    return job.execute_in_process(instance=instance, raise_on_error=False)


@pytest.mark.integration
def test_a_stale_nightly_audit_fails_its_freshness_check_and_alerts(demo_dsn, tmp_path, monkeypatch):
    with local_receiver() as rx, dg.instance_for_test() as instance:
        cfg = write_config(tmp_path / "dbguard.yaml",
                           alerts={"webhook_url": f"{rx.url}/hook", "webserver_url": "http://dagster.example:3917"})
        monkeypatch.setenv("DBGUARD_CONFIG", cfg)
        defs_ = build_definitions(database=PostgresResource(dsn=demo_dsn, config_path=cfg), config_path=cfg)
        cursor = sensor_tick(dbguard_alert_sensor, instance)
        instance.report_runless_asset_event(dg.AssetMaterialization("rls_audit"))  # the nightly audit ran now

        fresh = _run_freshness_check(defs_, instance)
        assert fresh.success
        (ev,) = fresh.get_asset_check_evaluations()
        assert ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
        cursor = sensor_tick(dbguard_alert_sensor, instance, cursor)
        assert rx.hook() == []

        # 26 hours and a minute later, without another audit (the schedule was stopped)
        later = time.time() + STALE_AFTER.total_seconds() + 60
        monkeypatch.setattr(last_update, "get_current_timestamp", lambda: later)
        stale = _run_freshness_check(defs_, instance)
        assert not stale.success  # blocking: the run fails, so the alert sensor sees it
        (ev,) = stale.get_asset_check_evaluations()
        assert not ev.passed and "overdue" in ev.description
        sensor_tick(dbguard_alert_sensor, instance, cursor)
        (hook,) = rx.hook()
        alert = hook.json()
        assert alert["run_id"] == stale.run_id
        assert [(c["check"], c["asset"], c["severity"]) for c in alert["failed_checks"]] == [
            ("freshness_check", "rls_audit", "ERROR")]
        assert alert["run_url"] == f"http://dagster.example:3917/runs/{stale.run_id}"
