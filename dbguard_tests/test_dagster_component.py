"""The DbguardDatabase component: a team adds a database to the nightly audit with a defs.yaml, no Python."""
from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from dbguard_pipeline.defs.component import ComponentDatabaseResource
from dbguard_pipeline.defs.definitions import build_definitions
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_tests.dagster_support import checks, materializations

BILLING = textwrap.dedent("""\
    type: dbguard_pipeline.defs.component.DbguardDatabase
    attributes:
      name: billing
      dsn_env: BILLING_DATABASE_URL
      tenant:
        column: tenant_id
        column_type: uuid
        tenants_table: public.tenants
        app_role: authenticated
    """)
KEYS = ("schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity")


def databases_folder(root: Path, **files: str) -> Path:
    for name, text in files.items():
        (root / name).mkdir(parents=True)
        (root / name / "defs.yaml").write_text(text, encoding="utf-8")
    return root


def test_a_defs_yaml_adds_the_assets_job_schedule_and_freshness_check_of_a_database(tmp_path):
    folder = databases_folder(tmp_path / "databases", billing=BILLING)
    defs = build_definitions(databases_dir=folder)
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    for key in KEYS:
        node = graph.get(dg.AssetKey(["billing", key]))
        assert node.group_name == "dbguard_billing" and node.kinds == {"postgres"}
        assert "the billing database (declared in defs.yaml; DSN from $BILLING_DATABASE_URL)" in node.description
    assert ("billing", "schema_snapshot") in {tuple(k.path) for k in graph.get(
        dg.AssetKey(["billing", "rls_audit"])).parent_keys}
    check_names = {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey(["billing", "rls_audit"])}
    assert {"no_critical_findings", "no_policy_weakened", "freshness_check"} <= check_names
    job = repo.get_job("billing_audit_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {f"billing/{k}" for k in KEYS}
    sched = repo.get_schedule_def("billing_audit_schedule")
    assert sched.cron_schedule == "0 2 * * *" and sched.default_status == dg.DefaultScheduleStatus.RUNNING
    assert sched.job_name == "billing_audit_job"
    # the one freshness sensor evaluates the component's check too
    sensor = repo.get_sensor_def("dbguard_freshness_sensor")
    assert dg.AssetCheckKey(dg.AssetKey(["billing", "rls_audit"]), "freshness_check") in \
        sensor.asset_selection.resolve_checks(graph)
    # the database keeps its own resource; the built-in ones are untouched
    resource = defs.resources["dbguard_billing"]
    assert isinstance(resource, ComponentDatabaseResource) and resource.dsn_env == "BILLING_DATABASE_URL"
    assert {"database", "fleet"} <= set(defs.resources)


def test_the_tenant_model_of_the_defs_yaml_is_laid_over_dbguard_yaml(tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("tenant:\n  guc: app.org\n  app_role: web\ncoverage_threshold: 90\n")
    folder = databases_folder(tmp_path / "databases", orgs=textwrap.dedent(f"""\
        type: dbguard_pipeline.defs.component.DbguardDatabase
        attributes:
          name: orgs
          dsn_env: ORGS_URL
          config_path: {cfg}
          cron: "30 3 * * *"
          tenant:
            column: org_id
            column_type: bigint
            tenants_table: public.orgs
        """))
    defs = build_definitions(databases_dir=folder)
    config = defs.resources["dbguard_orgs"].load_config()
    tenant = config.tenant
    assert (tenant.column, tenant.column_type, tenant.tenants_table) == ("org_id", "bigint", "public.orgs")
    assert (tenant.guc, tenant.app_role) == ("app.org", "web")  # from dbguard.yaml, not overridden
    assert config.coverage_threshold == 90
    assert defs.get_repository_def().get_schedule_def("orgs_audit_schedule").cron_schedule == "30 3 * * *"


@pytest.mark.integration
def test_the_component_database_is_audited_like_the_nightly_one(tmp_path, demo_dsn, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", demo_dsn)
    folder = databases_folder(tmp_path / "databases", billing=BILLING)
    defs = build_definitions(database=PostgresResource(dsn=demo_dsn), databases_dir=folder)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("billing_audit_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success  # the demo's critical findings fail the blocking check, as in the nightly job
    mats = materializations(result)
    assert {f"billing/{k}" for k in KEYS} <= set(mats)
    rls = mats["billing/rls_audit"]
    assert rls["database"] == "billing"  # the component's name, never the URL
    assert "rls_disabled_with_tenant_column:public.garages" in rls["finding_keys"]
    crit = checks(result)[("billing/rls_audit", "no_critical_findings")]
    assert not crit.passed and "public.garages" in crit.description
    assert mats["billing/tenant_coverage"]["coverage_percent"] == 100.0


def test_a_missing_dsn_variable_fails_the_run_with_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("BILLING_DATABASE_URL", raising=False)
    folder = databases_folder(tmp_path / "databases", billing=BILLING)
    defs = build_definitions(databases_dir=folder)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("billing_audit_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.user_failure_data.description == (
        "loading the configuration and database target failed: database 'billing': environment variable "
        "BILLING_DATABASE_URL is not set")


def test_a_name_that_cannot_be_an_asset_key_is_refused_with_a_suggestion(tmp_path):
    folder = databases_folder(tmp_path / "databases", eu=BILLING.replace("name: billing", "name: eu-prod"))
    with pytest.raises(Exception) as info:
        build_definitions(databases_dir=folder)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__
    assert any("dbguard database name 'eu-prod': use letters, digits and underscores" in m and "'eu_prod'" in m
               for m in chain)


def test_no_folder_or_an_empty_one_adds_nothing(tmp_path):
    base = {k.to_user_string() for k in build_definitions(databases_dir=tmp_path / "none")
            .get_repository_def().asset_graph.get_all_asset_keys()}
    (tmp_path / "empty").mkdir()
    empty = {k.to_user_string() for k in build_definitions(databases_dir=tmp_path / "empty")
             .get_repository_def().asset_graph.get_all_asset_keys()}
    assert base == empty and "rls_audit" in base
