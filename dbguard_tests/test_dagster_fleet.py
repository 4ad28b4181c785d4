"""A fleet of three real databases in one run with the multiprocess executor: one of them unreachable."""

from __future__ import annotations

import dagster as dg
import pytest

from dbguard_pipeline.defs.assets import FLEET_PARTITIONS
from dbguard_pipeline.defs.sensors import dbguard_alert_sensor
from dbguard_tests.conftest import run_sql
from dbguard_tests.dagster_support import CLEAN_TENANT_SQL, event_log_text, local_receiver, sensor_tick, write_config

FLEET = dg.AssetKey(["fleet", "rls_audit"])


def run_fleet(instance):
    # the multiprocess executor re-imports the job in each step's process: a reconstructable job
    job = dg.build_reconstructable_job(
        "dbguard_pipeline.defs.definitions", "resolve_job", reconstructable_args=("fleet_audit_job",)
    )
    return dg.execute_job(job, instance=instance, raise_on_error=False)


def partitions_materialized(instance, key: dg.AssetKey, run_id: str) -> set[str]:
    records = instance.fetch_materializations(key, limit=100).records
    return {r.asset_materialization.partition for r in records if r.run_id == run_id}


@pytest.mark.integration
def test_fleet_audits_each_database_in_its_own_process_and_isolates_the_unreachable_one(
    databases, demo_template, tmp_path, monkeypatch
):
    eu = databases.create(template=demo_template)
    run_sql(
        eu,
        "ALTER TABLE public.garages ALTER COLUMN tenant_id DROP NOT NULL;"
        "INSERT INTO public.garages (id, tenant_id, name) VALUES (gen_random_uuid(), NULL, 'x');",
    )
    us = databases.create()
    run_sql(us, CLEAN_TENANT_SQL)
    with local_receiver() as rx, dg.instance_for_test() as instance:
        cfg = write_config(
            tmp_path / "dbguard.yaml",
            databases=[
                {"name": "eu", "dsn_env": "FLEET_EU"},
                {"name": "us", "dsn_env": "FLEET_US"},
                {"name": "apac", "dsn_env": "FLEET_APAC"},
            ],
            alerts={"webhook_url": f"{rx.url}/hook", "ui_base_url": "http://dagster:3000"},
        )
        monkeypatch.setenv("DBGUARD_CONFIG", cfg)
        monkeypatch.setenv("FLEET_EU", eu)
        monkeypatch.setenv("FLEET_US", us)
        monkeypatch.setenv("FLEET_APAC", "postgresql://fleet:apac-pw-9x@127.0.0.1:1/apac")
        cursor = sensor_tick(dbguard_alert_sensor, instance)

        with run_fleet(instance) as result:
            run_id = result.run_id
            assert not result.success  # apac failed (and eu's blocking coverage check)

        assert instance.get_dynamic_partitions(FLEET_PARTITIONS.name) == ["eu", "us", "apac"]
        for asset in ("schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity", "isolation_report"):
            assert partitions_materialized(instance, dg.AssetKey(["fleet", asset]), run_id) == {"eu", "us"}, asset

        logs = instance.all_logs(run_id)
        failures = {
            e.step_key: e.dagster_event.step_failure_data
            for e in logs
            if e.dagster_event and e.dagster_event.is_step_failure
        }
        assert set(failures) == {"audit_database[apac]", "audit_database[eu]"}
        apac = failures["audit_database[apac]"].user_failure_data.description
        assert apac.startswith("schema snapshot failed: apac: cannot connect to fleet@127.0.0.1:1/apac")
        assert "\n" not in apac
        assert failures["audit_database[eu]"].error.cls_name == "DagsterAssetCheckFailedError"
        # one process per database: the multiprocess executor ran each step in its own process
        pids = {
            e.step_key: e.dagster_event.pid
            for e in logs
            if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
        }
        assert len({pids["audit_database[eu]"], pids["audit_database[us]"], pids["audit_database[apac]"]}) == 3

        # checks per partition: us clean, eu below the coverage threshold
        evals = [
            e.dagster_event.asset_check_evaluation_data
            for e in logs
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        cov = {(d.partition, d.passed) for d in evals if d.check_name == "coverage_above_threshold"}
        assert cov == {("eu", False), ("us", True)}
        # each database is probed after its audit: eu (the demo) leaks, us does not
        leaks = {(d.partition, d.passed) for d in evals if d.check_name == "no_cross_tenant_leaks"}
        assert leaks == {("eu", False), ("us", True)}
        assert all(d.passed for d in evals if d.partition == "us")

        # one alert for the run, naming each failing database once (eu, apac), with each one's detail; none for us
        sensor_tick(dbguard_alert_sensor, instance, cursor)
        sent = [r.json() for r in rx.hook()]
        assert len(sent) == 1
        assert sent[0]["title"] == "dbguard: 2 databases of the fleet failed the audit: apac, eu"
        alerts = {a["partition"]: {**a, "run_url": sent[0]["run_url"]} for a in sent[0]["databases"]}
        assert set(alerts) == {"eu", "apac"}
        assert alerts["apac"]["database"] == "apac" and alerts["apac"]["errors"][0] == apac
        assert {
            ("fleet/tenant_coverage", "coverage_above_threshold"),
            ("fleet/isolation_report", "no_cross_tenant_leaks"),
        } <= {(c["asset"], c["check"]) for c in alerts["eu"]["failed_checks"]}
        assert {a["run_url"] for a in alerts.values()} == {f"http://dagster:3000/runs/{run_id}"}
        assert "apac-pw-9x" not in event_log_text(instance, run_id) + "".join(r.body.decode() for r in rx.requests)

        # the next run, with apac reachable again, audits all three
        apac_db = databases.create()
        run_sql(apac_db, CLEAN_TENANT_SQL)
        monkeypatch.setenv("FLEET_APAC", apac_db)
        from dbguard_pipeline.defs.definitions import resolve_job

        again = resolve_job("fleet_audit_job").execute_in_process(instance=instance, raise_on_error=False)
        assert partitions_materialized(instance, FLEET, again.run_id) == {"eu", "us", "apac"}


@pytest.mark.integration
def test_one_fleet_partition_materializes_on_its_own(databases, tmp_path, monkeypatch):
    """What the UI's "Materialize" on one partition (or a backfill) does: the partitioned fleet/... assets."""
    from dbguard_pipeline.defs.assets import fleet_assets
    from dbguard_pipeline.defs.resources import FleetResource

    db = databases.create()
    run_sql(db, CLEAN_TENANT_SQL)
    cfg = write_config(tmp_path / "dbguard.yaml", databases=[{"name": "billing db", "dsn_env": "FLEET_BILLING"}])
    monkeypatch.setenv("FLEET_BILLING", db)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FLEET_PARTITIONS.name, ["billing db"])
        result = dg.materialize(
            fleet_assets,
            partition_key="billing db",
            instance=instance,
            resources={"fleet": FleetResource(config_path=cfg)},
        )
        assert result.success
        assert partitions_materialized(instance, FLEET, result.run_id) == {"billing db"}
        evals = [
            e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert evals and all(d.passed for d in evals)
        mats = result.asset_materializations_for_node("fleet__rls_audit")
        assert mats[0].metadata["database"].value == "billing db"
        # a partition that is not in the config fails with a one-line message
        instance.add_dynamic_partitions(FLEET_PARTITIONS.name, ["gone"])
        bad = dg.materialize(
            fleet_assets,
            partition_key="gone",
            instance=instance,
            raise_on_error=False,
            resources={"fleet": FleetResource(config_path=cfg)},
        )
        assert not bad.success
        (failure,) = [e for e in bad.all_events if e.is_step_failure]
        assert failure.step_failure_data.user_failure_data.description == (
            "loading the configuration and database target failed: gone: database 'gone' is not listed under "
            "databases: in the config"
        )
