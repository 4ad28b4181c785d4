"""The nightly audit job against a real database: assets, metadata, checks, regression checks, bad input,
secrets."""
from __future__ import annotations

import psycopg
import pytest
from psycopg import conninfo

import dagster as dg
from dbguard_pipeline.pg.dsn import describe_dsn, parse_dsn
from dbguard_tests.conftest import run_sql
from dbguard_tests.dagster_support import (checks, event_log_text, materializations, run_nightly, step_failures,
                                           write_config)

AUDIT_ASSETS = {"schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity"}


@pytest.mark.integration
def test_nightly_audit_of_the_demo_records_metadata_and_fails_on_the_critical_garages(demo_dsn):
    with dg.instance_for_test() as instance:
        result = run_nightly(instance, demo_dsn)
        mats = materializations(result)
        assert AUDIT_ASSETS <= set(mats)
        rls = mats["rls_audit"]
        # numbers the UI plots over time
        for key in ("critical", "warning", "info", "ignored", "tables_without_rls"):
            assert isinstance(rls[key], int), key
        assert rls["tables_without_rls"] == 2  # garages and conversation_messages (auth is not audited)
        assert rls["critical"] >= 1
        assert "rls_disabled_with_tenant_column:public.garages" in rls["finding_keys"]
        assert rls["finding_keys"]["rls_disabled_with_tenant_column:public.garages"] == "critical"
        # the findings are a table in the UI: one record per finding, most severe first, every one of them
        table = rls["findings"]
        assert [c.name for c in table.schema.columns] == ["severity", "rule", "table", "object", "message",
                                                          "cache_key"]
        rows = [r.data for r in table.records]
        assert len(rows) == rls["critical"] + rls["warning"] + rls["info"]
        assert rows[0]["severity"] == "critical"
        assert {"severity": "critical", "rule": "rls_disabled_with_tenant_column", "table": "public.garages",
                "cache_key": "rls_disabled_with_tenant_column:public.garages"}.items() <= next(
            r for r in rows if r["cache_key"] == "rls_disabled_with_tenant_column:public.garages").items()
        assert {r["cache_key"] for r in rows} == set(rls["finding_keys"])
        assert rls["database"] == describe_dsn(demo_dsn)
        cov = mats["tenant_coverage"]
        assert cov["coverage_percent"] == 100.0 and isinstance(cov["coverage_percent"], float)
        assert cov["tables_below_threshold"] == 0 and cov["tables_measured"] >= 14
        assert {r.data["table"] for r in cov["coverage"].records} >= {"public.garages", "public.vehicles"}
        assert isinstance(mats["data_integrity"]["critical"], int)
        snap = mats["schema_snapshot"]
        assert snap["tables"] == 17 and snap["policies"] == 14

        got = checks(result)
        crit = got[("rls_audit", "no_critical_findings")]
        assert not crit.passed and crit.severity == dg.AssetCheckSeverity.ERROR
        assert "rls_disabled_with_tenant_column:public.garages" in crit.description
        warn = got[("rls_audit", "no_warning_findings")]
        assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
        assert got[("tenant_coverage", "coverage_above_threshold")].passed
        for key in [("rls_audit", "no_new_findings"), ("rls_audit", "no_policy_weakened"),
                    ("rls_audit", "no_new_table_without_rls"), ("tenant_coverage", "coverage_not_dropped"),
                    ("data_integrity", "no_new_findings")]:
            assert got[key].passed and got[key].metadata["baseline"].value is True, key
        # the blocking ERROR check fails the run: that is what the alert sensor reacts to
        assert not result.success
        assert set(step_failures(result).values()) and all(
            "blocking asset check" in m for m in step_failures(result).values())


@pytest.mark.integration
def test_regression_checks_say_exactly_what_changed_since_the_previous_run(demo_dsn):
    with dg.instance_for_test() as instance:
        first = run_nightly(instance, demo_dsn)
        first_run = first.run_id
        run_sql(demo_dsn, """
            DROP POLICY vision_metrics_tenant_isolation ON public.vision_metrics;
            ALTER POLICY vision_accuracy_tenant_isolation ON public.vision_accuracy TO authenticated, anon;
            ALTER TABLE public.conversations DISABLE ROW LEVEL SECURITY;
            CREATE TABLE public.invoices (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id));
            ALTER TABLE public.garages ALTER COLUMN tenant_id DROP NOT NULL;
            INSERT INTO public.garages (id, tenant_id, name)
                SELECT gen_random_uuid(), NULL, 'no tenant ' || g FROM generate_series(1, 3) g;
        """)
        second = run_nightly(instance, demo_dsn)
        got = checks(second)

        weakened = got[("rls_audit", "no_policy_weakened")]
        assert not weakened.passed and weakened.severity == dg.AssetCheckSeverity.ERROR
        assert weakened.metadata["weakened"].value == [
            "public.conversations: row level security disabled",
            "public.vision_accuracy: policy 'vision_accuracy_tenant_isolation' changed: now applies to anon"]
        # a permissive policy removed narrows access (PostgreSQL OR-s permissive policies): reported, not weaker
        assert weakened.metadata["other_changes"].value == [
            "public.vision_metrics: policy 'vision_metrics_tenant_isolation' removed "
            "(permissive policy removed: access narrows)"]
        assert weakened.metadata["previous_run_id"].value == first_run

        new_table = got[("rls_audit", "no_new_table_without_rls")]
        assert not new_table.passed and new_table.metadata["new_tables_without_rls"].value == ["public.invoices"]

        new = got[("rls_audit", "no_new_findings")]
        assert not new.passed
        assert "rls_disabled_with_tenant_column:public.invoices" in new.metadata["new"].value
        assert new.severity == dg.AssetCheckSeverity.ERROR  # a new critical finding

        dropped = got[("tenant_coverage", "coverage_not_dropped")]
        assert not dropped.passed and dropped.severity == dg.AssetCheckSeverity.WARN
        (garages,) = [d for d in dropped.metadata["dropped"].value if d.startswith("public.garages:")]
        assert garages.startswith("public.garages: 100% -> ")
        threshold = got[("tenant_coverage", "coverage_above_threshold")]
        assert not threshold.passed and threshold.severity == dg.AssetCheckSeverity.ERROR
        assert "public.garages" in threshold.description

        cov = materializations(second)["tenant_coverage"]
        assert cov["tables_below_threshold"] == 1 and cov["coverage_percent"] < 100.0
        assert not second.success

        # A third run without changes: nothing new, nothing weakened (the baseline moved forward).
        third = checks(run_nightly(instance, demo_dsn))
        assert third[("rls_audit", "no_policy_weakened")].passed
        assert third[("rls_audit", "no_new_table_without_rls")].passed
        assert third[("rls_audit", "no_new_findings")].passed
        assert third[("tenant_coverage", "coverage_not_dropped")].passed


@pytest.mark.security
def test_unreachable_database_fails_with_one_line_message_and_no_password():
    dsn = "postgresql://auditor:Sup3r-S3cret-pw@127.0.0.1:1/app"
    with dg.instance_for_test() as instance:
        result = run_nightly(instance, dsn)
        assert not result.success
        failures = step_failures(result)
        msg = failures["schema_snapshot"]
        assert msg.startswith("schema snapshot failed: cannot connect to auditor@127.0.0.1:1/app")
        assert "\n" not in msg
        assert "Sup3r-S3cret-pw" not in event_log_text(instance, result.run_id)


@pytest.mark.integration
def test_statement_timeout_on_a_slow_database_fails_the_run_with_a_clear_message(demo_dsn, tmp_path):
    cfg = write_config(tmp_path / "dbguard.yaml", statement_timeout_ms=300, lock_timeout_ms=10_000)
    blocker = psycopg.connect(demo_dsn)
    try:
        blocker.execute("LOCK TABLE pg_catalog.pg_policy IN ACCESS EXCLUSIVE MODE")  # the catalog hangs
        with dg.instance_for_test() as instance:
            result = run_nightly(instance, demo_dsn, cfg)
    finally:
        blocker.rollback()
        blocker.close()
    assert not result.success
    msg = step_failures(result)["schema_snapshot"]
    assert msg.startswith("schema snapshot failed: query cancelled by the statement timeout (300 ms)")


@pytest.mark.integration
def test_config_file_with_an_error_fails_the_run_with_the_config_message(demo_dsn, tmp_path):
    cfg = write_config(tmp_path / "dbguard.yaml", coverage_threshold=150)
    with dg.instance_for_test() as instance:
        result = run_nightly(instance, demo_dsn, cfg)
    assert not result.success
    msg = step_failures(result)["schema_snapshot"]
    assert msg.startswith("loading the configuration and database target failed: config file ")
    assert "coverage_threshold" in msg and "\n" not in msg


@pytest.mark.security
def test_password_in_the_dsn_never_reaches_metadata_or_the_event_log(demo_dsn, capfd):
    secret = "pw-Kx9!q7#never-log-me"
    params = parse_dsn(demo_dsn)
    params["password"] = secret  # the embedded server trusts local connections: the password is carried, unused
    dsn = conninfo.make_conninfo(**params)
    with dg.instance_for_test() as instance:
        result = run_nightly(instance, dsn)
        assert materializations(result)["rls_audit"]["database"] == describe_dsn(dsn)
        text = event_log_text(instance, result.run_id)
    assert "tables_overview" in text and "finding_keys" in text  # the metadata is in there ...
    assert secret not in text  # ... and the password is not
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err


@pytest.mark.security
def test_hostile_table_names_come_through_metadata_and_checks_unchanged(empty_dsn):
    name = 'Tenant "x" | data; drop table y'
    run_sql(empty_dsn, f"""
        CREATE TABLE public.tenants (id uuid PRIMARY KEY);
        INSERT INTO public.tenants VALUES ('00000000-0000-0000-0000-000000000001');
        CREATE TABLE public."{name.replace('"', '""')}" (id int PRIMARY KEY, tenant_id uuid REFERENCES public.tenants (id));
        INSERT INTO public."{name.replace('"', '""')}" VALUES (1, '00000000-0000-0000-0000-000000000001'), (2, NULL);
    """)
    with dg.instance_for_test() as instance:
        result = run_nightly(instance, empty_dsn)
    cov = materializations(result)["tenant_coverage"]
    assert cov["coverage_by_table"] == {f"public.{name}": 50.0}
    check = checks(result)[("tenant_coverage", "coverage_above_threshold")]
    assert not check.passed and f"public.{name} 50%" in check.description
    snap = materializations(result)["schema_snapshot"]["tables_overview"]
    assert f"public.{name}" in {r.data["table"] for r in snap.records}  # one record, the name unchanged


@pytest.mark.integration
def test_applying_our_own_fix_is_not_reported_as_a_weakened_policy(demo_dsn, tmp_path):
    from dbguard_pipeline.cli import main

    with dg.instance_for_test() as instance:
        run_nightly(instance, demo_dsn)
        out = tmp_path / "fix"
        assert main(["generate-migration", "fix-rls-policy", "public.vehicles", "--dsn", demo_dsn,
                     "--out-dir", str(out), "--no-test"]) == 0
        assert main(["migrate", "up", "--dsn", demo_dsn, "--dir", str(out)]) == 0
        got = checks(run_nightly(instance, demo_dsn))
        weakened = got[("rls_audit", "no_policy_weakened")]
        assert weakened.passed, weakened.description
        assert "public.vehicles: policy 'Enable read access for all users' removed (permissive policy removed: " \
               "access narrows)" in weakened.metadata["other_changes"].value
        # a RESTRICTIVE policy that grows narrows access; one removed is a regression
        run_sql(demo_dsn, "CREATE POLICY guard ON public.vehicles AS RESTRICTIVE FOR SELECT TO authenticated "
                          "USING (tenant_id IS NOT NULL)")
        assert checks(run_nightly(instance, demo_dsn))[("rls_audit", "no_policy_weakened")].passed
        run_sql(demo_dsn, "DROP POLICY guard ON public.vehicles; CREATE POLICY guard ON public.vehicles AS RESTRICTIVE "
                          "FOR ALL TO authenticated, anon USING (tenant_id IS NOT NULL)")
        grown = checks(run_nightly(instance, demo_dsn))[("rls_audit", "no_policy_weakened")]
        assert grown.passed, grown.description
        assert "public.vehicles: policy 'guard' changed" in grown.metadata["other_changes"].value
        run_sql(demo_dsn, "DROP POLICY guard ON public.vehicles")
        weakened = checks(run_nightly(instance, demo_dsn))[("rls_audit", "no_policy_weakened")]
        assert not weakened.passed
        assert weakened.metadata["weakened"].value == [
            "public.vehicles: policy 'guard' removed: RESTRICTIVE policy removed"]


@pytest.mark.integration
def test_state_recorded_by_an_older_dbguard_is_still_compared(demo_dsn):
    """rls_state without the analyzer's verdicts (as recorded before they existed): shapes still compare."""
    from dbguard_pipeline.defs.audit_steps import Previous, rls_audit_step
    from dbguard_pipeline.defs.resources import Target
    from dbguard_pipeline.pg.catalog import introspect

    target = Target(name="old")
    first = rls_audit_step(target, introspect(demo_dsn), None)
    state = first.metadata["rls_state"].value
    for table in state.values():
        for policy in table["policies"].values():
            assert set(policy) == {"command", "permissive", "roles", "expr", "using_isolates", "check_isolates"}
            del policy["using_isolates"], policy["check_isolates"]
    previous = Previous({"rls_state": state, "finding_keys": first.metadata["finding_keys"].value}, run_id="old-run")
    assert {c.name: c.passed for c in rls_audit_step(target, introspect(demo_dsn), previous).checks}[
        "no_policy_weakened"]
    run_sql(demo_dsn, "ALTER POLICY vision_accuracy_tenant_isolation ON public.vision_accuracy USING (true)")
    check = {c.name: c for c in rls_audit_step(target, introspect(demo_dsn), previous).checks}["no_policy_weakened"]
    # without the old verdict, the rewrite is judged by the finding it brings
    assert check.metadata["weakened"].value == [
        "public.vision_accuracy: policy 'vision_accuracy_tenant_isolation' changed: now flagged weak_rls_policy"]
