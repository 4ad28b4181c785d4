"""The nightly schedules: cron and time zone from dbguard.yaml, the run each tick requests, and that run."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from dbguard_pipeline.defs.assets import FLEET_PARTITIONS
from dbguard_pipeline.defs.definitions import build_definitions, defs
from dbguard_pipeline.defs.resources import FleetResource, PostgresResource
from dbguard_tests.dagster_support import materializations, write_config


def _schedules(dsn, cfg):
    d = build_definitions(
        database=PostgresResource(dsn=dsn, config_path=cfg), fleet=FleetResource(config_path=cfg), config_path=cfg
    )
    return d, d.resolve_schedule_def("nightly_audit_schedule"), d.resolve_schedule_def("fleet_audit_schedule")


def test_default_schedule_is_0200_utc_every_night():
    sched = defs.resolve_schedule_def("nightly_audit_schedule")
    assert sched.cron_schedule == "0 2 * * *" and sched.execution_timezone == "UTC"
    assert sched.job_name == "nightly_audit_job"
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
    ticks = cron_string_iterator(start, sched.cron_schedule, sched.execution_timezone)
    assert [next(ticks).isoformat() for _ in range(2)] == ["2026-03-02T02:00:00+00:00", "2026-03-03T02:00:00+00:00"]


@pytest.mark.integration
def test_schedule_from_config_requests_a_run_that_audits_the_database(demo_dsn, tmp_path):
    cfg = write_config(
        tmp_path / "dbguard.yaml", schedule={"cron": "30 3 * * 1-5", "timezone": "Europe/Berlin"}, coverage_threshold=0
    )
    with dg.instance_for_test() as instance:
        d, nightly, fleet = _schedules(demo_dsn, cfg)
        assert (nightly.cron_schedule, nightly.execution_timezone) == ("30 3 * * 1-5", "Europe/Berlin")
        assert (fleet.cron_schedule, fleet.execution_timezone) == ("30 3 * * 1-5", "Europe/Berlin")
        berlin = ZoneInfo("Europe/Berlin")
        friday_noon = datetime(2026, 7, 3, 12, 0, tzinfo=berlin).timestamp()
        ticks = cron_string_iterator(friday_noon, nightly.cron_schedule, nightly.execution_timezone)
        assert next(ticks) == datetime(2026, 7, 6, 3, 30, tzinfo=berlin)  # Monday, 01:30 UTC in summer

        when = datetime(2026, 7, 6, 3, 30, tzinfo=berlin)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
            data = nightly.evaluate_tick(ctx)
        (request,) = data.run_requests
        assert request.run_key == "nightly:2026-07-06T03:30:00+02:00"
        assert request.tags["dbguard/trigger"] == "schedule"
        # run what the tick asked for
        result = d.resolve_job_def(nightly.job_name).execute_in_process(
            instance=instance, run_config=request.run_config, tags=request.tags, raise_on_error=False
        )
        mats = materializations(result)
        assert {"schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity"} <= set(mats)
        assert instance.get_run_by_id(result.run_id).tags["dbguard/trigger"] == "schedule"


@pytest.mark.integration
def test_fleet_schedule_skips_without_databases_and_registers_partitions_with_them(tmp_path):
    empty = write_config(tmp_path / "none.yaml", coverage_threshold=100)
    with dg.instance_for_test() as instance:
        _, _, fleet = _schedules(None, empty)
        when = datetime(2026, 1, 1, 2, tzinfo=UTC)
        # (contexts are used with `with`, as the daemon does, so that the instance they open is closed)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
            data = fleet.evaluate_tick(ctx)
        assert not data.run_requests and "no databases" in data.skip_message

        two = write_config(
            tmp_path / "two.yaml",
            databases=[{"name": "eu-prod", "dsn_env": "EU_DSN"}, {"name": "us-prod", "dsn_env": "US_DSN"}],
        )
        _, _, fleet = _schedules(None, two)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
            data = fleet.evaluate_tick(ctx)
        (request,) = data.run_requests
        assert request.run_key == "fleet:2026-01-01T02:00:00+00:00"
        assert instance.get_dynamic_partitions(FLEET_PARTITIONS.name) == ["eu-prod", "us-prod"]


def test_broken_config_keeps_the_code_location_loading_with_the_default_schedule(tmp_path):
    bad = tmp_path / "dbguard.yaml"
    bad.write_text("schedule: {cron: 'every night at two'}\n", encoding="utf-8")
    with dg.instance_for_test() as instance:
        _, nightly, fleet = _schedules(None, str(bad))
        assert nightly.cron_schedule == "0 2 * * *"
        when = datetime(2026, 1, 1, 2, tzinfo=UTC)
        # the run is still requested: it fails with the config error in its event log, and the alert says so
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
            assert len(nightly.evaluate_tick(ctx).run_requests) == 1
            assert len(fleet.evaluate_tick(ctx).run_requests) == 1
