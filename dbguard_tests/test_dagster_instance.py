"""The Dagster instance: the documented dagster-postgres storage (a database of the embedded server, over its
Unix socket), and the local DAGSTER_HOME that `make dev` writes."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest

from dbguard_pipeline.defs.sensors import dbguard_alert_sensor
from dbguard_pipeline.devtools.home import ensure_dagster_home
from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_tests.dagster_support import checks, run_nightly, sensor_tick

ROOT = Path(__file__).resolve().parents[1]


def socket_url(dsn: str) -> str:
    """postgresql+psycopg2://user@/db?host=/socket/dir, the form dagster-postgres (SQLAlchemy) accepts."""
    p = parse_dsn(dsn)
    port = f"&port={quote(p['port'])}" if p.get("port") else ""
    return f"postgresql+psycopg2://{quote(p['user'])}@/{quote(p['dbname'])}?host={quote(p['host'], safe='/')}{port}"


@pytest.mark.integration
def test_audit_runs_on_an_instance_stored_in_postgresql(databases, demo_dsn, tmp_path, monkeypatch):
    store = databases.create()
    monkeypatch.setenv("DAGSTER_PG_URL", socket_url(store))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "docs" / "dagster.yaml.example", home / "dagster.yaml")  # the documented file, as is
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        cursor = sensor_tick(dbguard_alert_sensor, instance)
        first = run_nightly(instance, demo_dsn)
        second = run_nightly(instance, demo_dsn)
        # the regression checks read the previous run back from PostgreSQL
        got = checks(second)
        assert got[("rls_audit", "no_new_findings")].metadata["previous_run_id"].value == first.run_id
        assert got[("rls_audit", "no_policy_weakened")].passed
        sensor_tick(dbguard_alert_sensor, instance, cursor)  # the alert sensor's queries work on PostgreSQL
        assert instance.get_run_by_id(first.run_id).tags.get("dbguard/alerted") == "1"  # the demo fails its checks
    with psycopg.connect(store) as conn:
        runs = conn.execute("select count(*) from runs").fetchone()[0]
        mats = conn.execute(
            "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
            " and asset_key like '%rls_audit%'"
        ).fetchone()[0]
        checks_rows = conn.execute("select count(*) from asset_check_executions").fetchone()[0]
    assert runs == 2 and mats == 2 and checks_rows > 10


def test_make_dev_home_gets_a_dagster_yaml_once(tmp_path):
    home = ensure_dagster_home(tmp_path / ".dagster_home")
    cfg = home / "dagster.yaml"
    text = cfg.read_text()
    assert "telemetry" in text
    with dg.DagsterInstance.from_config(str(home)) as instance:  # a valid instance configuration
        assert instance.is_persistent
    cfg.write_text(text + "\n# edited by hand\n")
    ensure_dagster_home(home)
    assert cfg.read_text().endswith("# edited by hand\n")  # never rewritten
