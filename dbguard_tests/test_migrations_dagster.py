"""The generate_fix_migrations job and its sensor, against a real database and a real Dagster instance."""

from __future__ import annotations

import dagster as dg
import pytest

from dbguard_pipeline.defs.fix_migrations import (
    fix_migrations_sensor,
    fixable_keys,
    generate_fix_migrations_job,
    run_key,
)
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_pipeline.fixes.ledger import Runner

from .dagster_support import run_nightly


def _run_job(dsn, out_dir, **config):
    return generate_fix_migrations_job.execute_in_process(
        run_config={
            "ops": {"plan_fixes": {"config": {"out_dir": str(out_dir), "timestamp": "20250101000000", **config}}}
        },
        resources={"database": PostgresResource(dsn=dsn)},
        raise_on_error=False,
    )


def _meta(result, step):
    for e in result.all_events:
        if e.event_type_value == "STEP_OUTPUT" and e.step_key == step:
            return {k: v.value for k, v in e.step_output_data.metadata.items()}
    return {}


@pytest.mark.integration
def test_the_job_writes_linted_round_tripped_migrations_and_applies_nothing(demo_dsn, tmp_path):
    out = tmp_path / "migrations"
    result = _run_job(demo_dsn, out)
    assert result.success
    assert _meta(result, "plan_fixes")["migrations"] == 14
    assert _meta(result, "lint_migrations")["violations"] == 0
    assert _meta(result, "round_trip_migrations")["failed"] == 0
    assert _meta(result, "round_trip_migrations")["passed"] == 14
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 28
    assert "20250101000000_add_tenant_isolation_conversation_messages.sql" in files
    # nothing was applied: every migration is pending, the audited database has no ledger
    assert {s for s, _, _ in Runner(demo_dsn, out).status()} == {"pending"}
    # a second run finds every fixable finding already covered by a file: writes nothing
    again = _run_job(demo_dsn, out, timestamp="20250101000001")
    assert again.success and _meta(again, "plan_fixes")["migrations"] == 0
    assert len(list(out.iterdir())) == 28


@pytest.mark.integration
def test_the_job_can_be_limited_to_given_findings(demo_dsn, tmp_path):
    result = _run_job(
        demo_dsn, tmp_path, cache_keys=["rls_disabled_with_tenant_column:public.garages"], round_trip=False
    )
    assert result.success
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20250101000000_fix_rls_policy_garages.sql",
        "20250101000000_fix_rls_policy_garages_rollback.sql",
    ]


def test_run_key_depends_only_on_the_fixable_cache_keys():
    keys = {
        "weak_rls_policy:public.a:p": "warning",
        "no_primary_key:public.b": "info",
        "rls_disabled_with_tenant_column:public.c": "critical",
    }
    assert fixable_keys(keys) == ["rls_disabled_with_tenant_column:public.c", "weak_rls_policy:public.a:p"]
    assert run_key(fixable_keys(keys)) == run_key(list(reversed(fixable_keys(keys))))
    assert run_key(["weak_rls_policy:public.a:p"]) != run_key(fixable_keys(keys))


@pytest.mark.integration
def test_the_sensor_launches_once_per_set_of_findings_without_migrations(demo_dsn, tmp_path, monkeypatch):
    out = tmp_path / "migrations"
    monkeypatch.setenv("DBGUARD_MIGRATIONS_DIR", str(out))
    with dg.instance_for_test() as instance:
        run_nightly(instance, demo_dsn)  # the real audit materializes rls_audit with finding_keys
        ctx = dg.build_sensor_context(instance=instance)
        first = list(fix_migrations_sensor(ctx) or [])
        assert len(first) == 1 and isinstance(first[0], dg.RunRequest)
        request = first[0]
        keys = request.run_config["ops"]["plan_fixes"]["config"]["cache_keys"]
        assert "rls_disabled_with_tenant_column:public.garages" in keys
        assert "missing_tenant_column:public.conversation_messages" in keys
        assert request.run_key == run_key(keys)
        # the same findings give the same run key (Dagster never launches a run key twice)
        again = list(fix_migrations_sensor(dg.build_sensor_context(instance=instance)) or [])
        assert again[0].run_key == request.run_key
        # once the migrations are in the folder, the same audit launches nothing
        assert _run_job(demo_dsn, out, round_trip=False).success
        later = list(fix_migrations_sensor(dg.build_sensor_context(instance=instance)) or [])
        assert all(isinstance(x, dg.SkipReason) for x in later), [getattr(x, "run_config", x) for x in later]


def test_the_definitions_load_with_the_job_and_sensor():
    from dbguard_pipeline.defs.definitions import build_definitions

    defs = build_definitions()
    assert defs.resolve_job_def("generate_fix_migrations").name == "generate_fix_migrations"
    assert defs.resolve_sensor_def("fix_migrations_sensor").name == "fix_migrations_sensor"
