"""Alerts end to end: a failing audit run, the run failure sensor, a local HTTP server receiving the webhook
and the Slack Web API call; one alert per failing run, never two."""

from __future__ import annotations

import logging

import dagster as dg
import pytest
from psycopg import conninfo

from dbguard_pipeline.alerts import Alert, FailedCheck, deliver
from dbguard_pipeline.config import AlertsConfig
from dbguard_pipeline.defs.sensors import ALERTED_TAG, dbguard_alert_sensor
from dbguard_pipeline.pg.dsn import describe_dsn, parse_dsn
from dbguard_tests.conftest import run_sql
from dbguard_tests.dagster_support import local_receiver, run_nightly, write_config

UI = "http://dagster.internal:3000"
TOKEN = "xoxb-test-token-never-shown"


def tick(instance, cursor=None):
    """One evaluation of the alert sensor, as the daemon does it; returns the new cursor."""
    with dg.build_sensor_context(instance=instance, cursor=cursor) as ctx:
        return dbguard_alert_sensor.evaluate_tick(ctx).cursor


def break_coverage(dsn: str) -> None:
    run_sql(
        dsn,
        """
        ALTER TABLE public.garages ALTER COLUMN tenant_id DROP NOT NULL;
        INSERT INTO public.garages (id, tenant_id, name) VALUES (gen_random_uuid(), NULL, 'no tenant');
    """,
    )


@pytest.fixture
def alert_config(tmp_path, monkeypatch):
    def make(url: str, **extra) -> str:
        alerts = {
            "webhook_url": f"{url}/hook",
            "slack_channel": "#db-alerts",
            "slack_token_env": "DBGUARD_TEST_SLACK",
            "slack_base_url": f"{url}/api/",
            "ui_base_url": UI,
            **extra,
        }
        path = write_config(tmp_path / "dbguard.yaml", alerts=alerts)
        monkeypatch.setenv("DBGUARD_CONFIG", path)
        monkeypatch.setenv("DBGUARD_TEST_SLACK", TOKEN)
        return path

    return make


@pytest.mark.integration
def test_failing_check_sends_one_alert_to_webhook_slack_and_log(demo_dsn, alert_config, caplog):
    secret = "alert-pw-5up3r"
    params = parse_dsn(demo_dsn)
    params["password"] = secret
    dsn = conninfo.make_conninfo(**params)
    break_coverage(dsn)
    with local_receiver() as rx, dg.instance_for_test() as instance:
        cfg = alert_config(rx.url)
        cursor = tick(instance)  # the sensor starts: cursor at the present
        result = run_nightly(instance, dsn, cfg)
        assert not result.success
        with caplog.at_level(logging.ERROR, logger="dbguard.alerts"):
            cursor = tick(instance, cursor)

        (hook,) = rx.hook()
        payload = hook.json()
        assert hook.headers["Content-Type"] == "application/json"
        assert payload["database"] == describe_dsn(dsn)
        assert payload["run_id"] == result.run_id
        assert payload["run_url"] == f"{UI}/runs/{result.run_id}"
        failed = {(c["asset"], c["check"]) for c in payload["failed_checks"]}
        assert ("tenant_coverage", "coverage_above_threshold") in failed
        (cov,) = [c for c in payload["failed_checks"] if c["check"] == "coverage_above_threshold"]
        assert cov["severity"] == "ERROR" and "public.garages" in cov["description"]
        assert set(payload["summary"]) >= {"critical", "warning", "info", "ignored"}
        assert payload["summary"]["critical"] == sum(
            m["critical"] for m in _metadata(result, ("rls_audit", "data_integrity"))
        )

        (slack,) = rx.slack()
        assert slack.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "db-alerts" in slack.body.decode() and "coverage_above_threshold" in slack.body.decode()
        assert any("coverage_above_threshold" in r.getMessage() for r in caplog.records)

        everything = "\n".join(r.body.decode() for r in rx.requests) + caplog.text
        assert secret not in everything and TOKEN not in hook.body.decode()

        # never twice: the next ticks, a sensor restarted from an old cursor, and a reset cursor send nothing
        tick(instance, cursor)
        tick(instance, None)
        assert len(rx.hook()) == 1 and len(rx.slack()) == 1
        assert instance.get_run_by_id(result.run_id).tags[ALERTED_TAG] == "1"


@pytest.mark.integration
def test_a_clean_run_sends_nothing_and_an_unreachable_database_alerts(empty_dsn, alert_config):
    run_sql(
        empty_dsn,
        "CREATE TABLE public.lookup (id int PRIMARY KEY); ALTER TABLE public.lookup ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY lookup_read ON public.lookup FOR SELECT USING (true);",
    )
    with local_receiver() as rx, dg.instance_for_test() as instance:
        cfg = alert_config(rx.url)
        cursor = tick(instance)
        ok = run_nightly(instance, empty_dsn, cfg)
        assert ok.success
        cursor = tick(instance, cursor)
        assert rx.hook() == [] and rx.slack() == []
        down = run_nightly(instance, "postgresql://app:pw-down-123@127.0.0.1:1/prod", cfg)
        assert not down.success
        cursor = tick(instance, cursor)
        (hook,) = rx.hook()
        alert = hook.json()
        assert alert["run_id"] == down.run_id
        assert alert["database"] == "app@127.0.0.1:1/prod"
        assert alert["failed_checks"] == []
        assert alert["errors"][0].startswith("schema snapshot failed: cannot connect to app@127.0.0.1:1/prod")
        assert all("\n" not in e for e in alert["errors"])
        assert "pw-down-123" not in r_bodies(rx)


def r_bodies(rx) -> str:
    return "\n".join(r.body.decode() for r in rx.requests)


def _metadata(result, assets):
    out = []
    for e in result.all_events:
        if e.event_type_value == "ASSET_MATERIALIZATION":
            m = e.step_materialization_data.materialization
            if m.asset_key.to_user_string() in assets:
                out.append({k: v.value for k, v in m.metadata.items()})
    return out


@pytest.mark.integration
def test_broken_config_still_alerts_through_the_alerts_section(demo_dsn, tmp_path, monkeypatch):
    with local_receiver() as rx, dg.instance_for_test() as instance:
        path = write_config(
            tmp_path / "dbguard.yaml",
            coverage_threshold=-5,
            alerts={"webhook_url": f"{rx.url}/hook", "ui_base_url": UI},
        )
        monkeypatch.setenv("DBGUARD_CONFIG", path)
        cursor = tick(instance)
        result = run_nightly(instance, demo_dsn, path)
        assert not result.success
        tick(instance, cursor)
        (hook,) = rx.hook()
        (err,) = hook.json()["errors"]
        assert "coverage_threshold" in err and err.startswith("loading the configuration")


@pytest.mark.security
def test_alert_delivery_failure_is_reported_not_raised_and_hides_the_webhook_path():
    alert = Alert(
        database="app@db:5432/prod",
        job="nightly_audit_job",
        run_id="r" * 36,
        run_url=f"{UI}/runs/x",
        failed_checks=(FailedCheck("no_critical_findings", "rls_audit", "ERROR", "1 critical"),),
        summary={"critical": 1, "warning": 0},
    )
    cfg = AlertsConfig(
        webhook_url="http://127.0.0.1:1/services/T000/B000/secret-path-token",
        log=False,
        slack_channel="#x",
        slack_token_env="DBGUARD_TEST_UNSET_TOKEN",
        timeout_seconds=2,
    )
    results = deliver(alert, cfg, environ={})
    by = {r.channel: r for r in results}
    assert not by["webhook"].ok and "127.0.0.1:1" in by["webhook"].detail
    assert "secret-path-token" not in by["webhook"].detail
    assert not by["slack"].ok and "DBGUARD_TEST_UNSET_TOKEN is not set" in by["slack"].detail
    text = alert.text()
    assert "no_critical_findings" in text and "rls_audit" in text and f"{UI}/runs/x" in text
