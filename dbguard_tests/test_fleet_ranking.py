"""The fleet ranking: every database of the fleet ranked by leaks and critical findings, worst first, with the
trend over nights; real databases audited and probed by the fleet job."""

from __future__ import annotations

import dagster as dg
import pytest

from dbguard_pipeline.defs.definitions import defs, resolve_job
from dbguard_pipeline.defs.fleet import K_RANKING, fleet_ranking
from dbguard_pipeline.defs.resources import FleetResource
from dbguard_tests.conftest import run_sql
from dbguard_tests.dagster_support import CLEAN_TENANT_SQL, write_config


def rank(instance, cfg: str) -> dict:
    result = dg.materialize([fleet_ranking], instance=instance, resources={"fleet": FleetResource(config_path=cfg)})
    assert result.success
    (mat,) = result.asset_materializations_for_node("fleet__fleet_ranking")
    return {k: v.value for k, v in mat.metadata.items()}


def rows(metadata: dict) -> list[dict]:
    return [dict(r.data) for r in metadata["ranking"].records]


@pytest.mark.integration
def test_ranking_puts_the_worst_database_first_and_follows_it_over_nights(
    databases, demo_template, tmp_path, monkeypatch
):
    demo = databases.create(template=demo_template)
    clean = databases.create()
    run_sql(clean, CLEAN_TENANT_SQL)
    tidy = databases.create()
    run_sql(tidy, CLEAN_TENANT_SQL)
    cfg = write_config(
        tmp_path / "dbguard.yaml",
        databases=[
            {"name": "tidy", "dsn_env": "FLEET_TIDY"},
            {"name": "gone", "dsn_env": "FLEET_GONE"},
            {"name": "clean", "dsn_env": "FLEET_CLEAN"},
            {"name": "demo", "dsn_env": "FLEET_DEMO"},
        ],
    )
    monkeypatch.setenv("DBGUARD_CONFIG", cfg)
    monkeypatch.setenv("FLEET_DEMO", demo)
    monkeypatch.setenv("FLEET_CLEAN", clean)
    monkeypatch.setenv("FLEET_TIDY", tidy)
    monkeypatch.setenv("FLEET_GONE", "postgresql://fleet@127.0.0.1:1/gone")
    with dg.instance_for_test() as instance:
        resolve_job("fleet_audit_job").execute_in_process(instance=instance, raise_on_error=False)
        night1 = rank(instance, cfg)
        first = rows(night1)
        assert [r["database"] for r in first] == ["demo", "clean", "tidy", "gone"]
        assert [r["rank"] for r in first] == [1, 2, 3, 4]
        top = first[0]
        assert top["leaks"] > 0 and top["critical"] > 0 and top["trend"] == "new"
        assert (first[1]["leaks"], first[1]["critical"], first[1]["trend"]) == (0, 0, "new")
        assert (first[3]["leaks"], first[3]["critical"], first[3]["trend"]) == (None, None, "not audited")
        assert night1["worst"] == ["demo"] and night1["databases"] == 4 and night1["not_audited"] == 1
        assert night1["ranking"].schema.columns[0].name == "rank"

        # night 2: clean loses its RLS (critical findings), demo unchanged
        run_sql(clean, "ALTER TABLE public.invoices DISABLE ROW LEVEL SECURITY")
        resolve_job("fleet_audit_job").execute_in_process(instance=instance, raise_on_error=False)
        night2 = rank(instance, cfg)
        second = {r["database"]: r for r in rows(night2)}
        assert second["clean"]["critical"] > 0
        assert second["clean"]["trend"] == f"worse (0/0 -> 0/{second['clean']['critical']})"
        assert second["demo"]["trend"] == f"same ({top['leaks']}/{top['critical']} -> {top['leaks']}/{top['critical']})"
        assert second["tidy"]["trend"] == "same (0/0 -> 0/0)"
        assert [r["database"] for r in rows(night2)][:2] == ["demo", "clean"]
        assert night2["worst"] == ["demo", "clean"]
        assert night2["history"]["clean"] == [[0, 0], [0, second["clean"]["critical"]]]


def test_ranking_is_requested_after_every_fleet_run():
    repo = defs.get_repository_def()
    assert repo.get_job("fleet_ranking_job").asset_layer.selected_asset_keys == {K_RANKING}
    for name in ("fleet_ranking_sensor", "fleet_ranking_after_failure"):
        sensor = repo.get_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert {t.job_name for t in sensor.targets} == {"fleet_ranking_job"}
