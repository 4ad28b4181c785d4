"""The isolation probe on known-leaky and known-safe tables of every policy style, GUC and JWT tenancy.

Each database is built once per module and probed once: the probe leaves no trace (test_probe_demo.py proves
it), so every test reads the same report.
"""

from __future__ import annotations

import pytest

from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.probe import probe

from .isolation_helpers import (
    APP,
    GUC_STYLES_SQL,
    JWT_STYLES_SQL,
    TENANT_A,
    TENANT_B,
    USER_A,
    scratch_database,
    supabase_shim,
)

pytestmark = pytest.mark.security

GUC_CONFIG = Config(tenant=TenantModel(app_role=APP))
JWT_CONFIG = Config(tenant=TenantModel(context="jwt", app_role="authenticated"))


@pytest.fixture(scope="module")
def guc_report(server_dsn):
    with scratch_database(server_dsn, GUC_STYLES_SQL) as dsn:
        yield probe(dsn, GUC_CONFIG)


@pytest.fixture(scope="module")
def jwt_report(server_dsn):
    with scratch_database(server_dsn, supabase_shim(), JWT_STYLES_SQL) as dsn:
        yield probe(dsn, JWT_CONFIG)


def verdicts(report, table: str) -> dict[str, str]:
    return {cmd: report.outcome(f"public.{table}", cmd)[0] for cmd in ("select", "insert", "update", "delete")}


def probe_result(report, table: str, probe_name: str):
    (r,) = [r for r in report.results if r.table == table and r.probe == probe_name]
    return r


def test_tenants_are_picked_deterministically_and_every_probe_ran(guc_report):
    assert guc_report.tenant_context["tenant_a"] == TENANT_A
    assert guc_report.tenant_context["tenant_b"] == TENANT_B
    assert guc_report.not_probed == []
    assert guc_report.warnings == []


def test_rls_off_leaks_on_every_command(guc_report):
    assert verdicts(guc_report, "rls_off") == dict.fromkeys(("select", "insert", "update", "delete"), "leak")
    witness = probe_result(guc_report, "rls_off", "select_other_tenant").detail
    assert witness == (
        f"as {APP} with tenant A, SELECT on public.rls_off returned 2 rows of tenant B "
        f"(row level security is disabled on this table)"
    )


def test_using_true_leaks_on_every_command(guc_report):
    assert set(verdicts(guc_report, "using_true").values()) == {"leak"}
    assert not probe_result(guc_report, "using_true", "select_without_context").isolated


def test_missing_with_check_lets_a_row_move_to_another_tenant(guc_report):
    assert verdicts(guc_report, "check_missing") == {
        "select": "isolated",
        "insert": "leak",
        "update": "leak",
        "delete": "isolated",
    }
    assert probe_result(guc_report, "check_missing", "update_other_tenant").isolated
    # A WHERE that reads columns makes PostgreSQL check the new row against the SELECT policy too, which
    # refuses it; the blind UPDATE (constants only) meets only WITH CHECK (true), and the row moves.
    filtered = probe_result(guc_report, "check_missing", "move_row_to_other_tenant")
    assert filtered.isolated and "violates row-level security policy" in filtered.detail
    blind = probe_result(guc_report, "check_missing", "move_row_to_other_tenant_blind")
    assert not blind.isolated and "1 row of tenant A would now belong to tenant B" in blind.detail


def test_policy_function_that_ignores_the_tenant_leaks(guc_report):
    assert set(verdicts(guc_report, "function_ignores_tenant").values()) == {"leak"}


def test_correct_guc_policy_holds_on_every_probe(guc_report):
    assert set(verdicts(guc_report, "safe_guc").values()) == {"isolated"}
    held = probe_result(guc_report, "safe_guc", "select_other_tenant").detail
    assert "returned none of the rows of tenant B (2 targeted) (tenant A saw 2 of its 2)" in held
    assert (
        "violates row-level security policy" in probe_result(guc_report, "safe_guc", "insert_for_other_tenant").detail
    )


def test_blind_writes_reach_rows_the_filtered_writes_cannot(guc_report):
    v = verdicts(guc_report, "blind_only")
    assert v["select"] == v["insert"] == "isolated" and v["update"] == v["delete"] == "leak"
    assert probe_result(guc_report, "blind_only", "update_other_tenant").isolated
    assert probe_result(guc_report, "blind_only", "delete_other_tenant").isolated
    assert not probe_result(guc_report, "blind_only", "update_other_tenant_blind").isolated
    assert not probe_result(guc_report, "blind_only", "delete_other_tenant_blind").isolated
    assert probe_result(guc_report, "blind_only", "move_row_to_other_tenant").isolated


def test_table_owned_by_the_app_role_without_force_leaks_and_says_why(guc_report):
    assert set(verdicts(guc_report, "owned_by_app").values()) == {"leak"}
    assert (
        f"the application role {APP} owns it and row level security is not forced"
        in probe_result(guc_report, "owned_by_app", "select_other_tenant").detail
    )


def test_tables_reached_through_foreign_keys_are_probed(guc_report):
    assert set(verdicts(guc_report, "child_ok").values()) == {"isolated"}
    assert set(verdicts(guc_report, "child_leak").values()) == {"leak"}
    assert probe_result(guc_report, "child_leak", "select_other_tenant").rows == 2


def test_view_running_as_its_owner_leaks_and_security_invoker_view_holds(guc_report):
    assert guc_report.kinds["public.owner_view"] == "view"
    assert guc_report.outcome("public.owner_view", "select")[0] == "leak"
    assert probe_result(guc_report, "owner_view", "select_other_tenant").detail.startswith(
        f"as {APP} with tenant A, SELECT on view public.owner_view returned 2 rows of tenant B"
    )
    assert guc_report.outcome("public.invoker_view", "select")[0] == "isolated"


def test_jwt_tenancy_correct_and_membership_policies_hold(jwt_report):
    ctx = jwt_report.tenant_context
    assert ctx["mechanism"] == "jwt" and ctx["setting"] == "request.jwt.claims"
    # the user of tenant A who is not also a member of B: another pick would be a false leak
    assert ctx["user_a"] == USER_A
    assert set(verdicts(jwt_report, "jwt_ok").values()) == {"isolated"}
    assert set(verdicts(jwt_report, "member_ok").values()) == {"isolated"}
    assert set(verdicts(jwt_report, "memberships").values()) == {"isolated"}
    assert jwt_report.not_probed == []


def test_jwt_policy_that_only_checks_sign_in_leaks(jwt_report):
    assert set(verdicts(jwt_report, "any_user").values()) == {"leak"}
    assert (
        probe_result(jwt_report, "any_user", "select_other_tenant").detail
        == "as authenticated with tenant A, SELECT on public.any_user returned 2 rows of tenant B"
    )
    assert jwt_report.leaking_tables() == ["public.any_user"]
