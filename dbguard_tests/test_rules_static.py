"""The static rules beyond their case files (dbguard_tests/rules/cases/, run by test_rules_cases.py): several
rules at once on the demo database, on hostile identifiers and on the isolation probe's policy styles, and a
policy text the parser cannot read."""
from __future__ import annotations

import dataclasses
import shlex

import pytest

from dbguard_pipeline import rules
from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.model.findings import Severity
from dbguard_pipeline.pg.catalog import introspect

from .conftest import run_sql
from .rules.support import BASE, CTX, SHIM, only_keys, tenant_table

STATIC_RULES = tuple(k for k, v in rules.all_rules().items() if not v.needs_metrics)


def audit(dsn, sql):
    run_sql(dsn, SHIM + BASE + sql)
    return rules.run_rules(introspect(dsn), None, Config(), only=STATIC_RULES)


def keys(findings, rule=None):
    return only_keys(findings, rule)


@pytest.mark.security
def test_weak_rls_policy_unparsable_text_is_reported_conservatively(empty_dsn):
    run_sql(empty_dsn, SHIM + BASE + tenant_table("t") + f"CREATE POLICY p ON public.t USING (tenant_id = {CTX});")
    snap = introspect(empty_dsn)
    t = snap.table("public.t")
    broken = dataclasses.replace(t, policies=(dataclasses.replace(t.policies[0], using="tenant_id = ((("),))
    snap = dataclasses.replace(snap, tables=tuple(broken if x is t else x for x in snap.tables))
    (f,) = rules.run_rules(snap, None, Config(), only=["weak_rls_policy", "missing_with_check"])
    assert f.rule == "weak_rls_policy" and f.object == "p"
    assert not f.detail["parsed"] and f.detail["parse_error"] and "could not be parsed" in f.message


DEMO_USING_TRUE = ("capture_sessions", "event_photos", "photo_metadata", "profiles", "user_tenants",
                   "vehicle_event_audit_logs", "vehicle_events", "vehicle_images", "vehicles")


@pytest.mark.integration
def test_demo_database_static_findings_match_the_original_validation(demo_dsn):
    snap = introspect(demo_dsn)
    fs = rules.run_rules(snap, None, Config(), only=STATIC_RULES)
    expected = {"rls_disabled_with_tenant_column:public.garages",
                "missing_tenant_column:public.conversation_messages",
                "tenant_fk_missing:public.vehicle_spec_enhancements:tenant_id",
                "tenant_context_cast_unsafe:public.conversations:conversations_tenant_isolation",
                "auth_rls_initplan:public.conversations:conversations_tenant_isolation",
                "unindexed_foreign_key:public.event_photos:event_photos_image_id_fkey"}
    expected |= {f"weak_rls_policy:public.{t}:Enable read access for all users" for t in DEMO_USING_TRUE}
    assert keys(fs) == expected
    assert [f.table for f in fs if f.rule == "rls_disabled_with_tenant_column"] == ["garages"]
    assert all(f.severity == Severity.WARNING for f in fs if f.rule == "weak_rls_policy")
    assert not [f for f in fs if f.table in ("vision_accuracy", "vision_metrics")]
    by = {f.cache_key: f for f in fs}
    assert by["rls_disabled_with_tenant_column:public.garages"].remediation == \
        "dbguard generate-migration fix-rls-policy public.garages"
    assert by["missing_tenant_column:public.conversation_messages"].remediation == \
        "dbguard generate-migration add-tenant-isolation public.conversation_messages"
    assert by["tenant_fk_missing:public.vehicle_spec_enhancements:tenant_id"].remediation == \
        "dbguard generate-migration add-foreign-key public.vehicle_spec_enhancements public.tenants"
    assert by["unindexed_foreign_key:public.event_photos:event_photos_image_id_fkey"].remediation == \
        "dbguard generate-migration add-composite-index public.event_photos image_id"
    # the rules are pure functions of the snapshot: same input, same findings, in the same order
    assert rules.run_rules(snap, None, Config(), only=STATIC_RULES) == fs


@pytest.mark.security
def test_every_static_rule_on_hostile_identifiers(empty_dsn):
    schema = 'Schéma "x"; DROP SCHEMA public; --'
    table = "t" * 40 + '"; DELETE FROM x; ü' + "zzz"  # 63 bytes: the longest name PostgreSQL keeps
    qs = '"' + schema.replace('"', '""') + '"'
    qt = '"' + table.replace('"', '""') + '"'
    fs = audit(empty_dsn, f"""
        CREATE SCHEMA {qs};
        CREATE TABLE {qs}.{qt} (id int, tenant_id uuid, "Ref ""Id"" x" int);
        CREATE TABLE {qs}."Parent" (id int PRIMARY KEY);
        ALTER TABLE {qs}.{qt} ADD CONSTRAINT "fk ""r"" x" FOREIGN KEY ("Ref ""Id"" x") REFERENCES {qs}."Parent";
        CREATE INDEX "a dup" ON {qs}.{qt} (id);
        CREATE INDEX "dup ""2"" b" ON {qs}.{qt} (id);
        CREATE POLICY "p; DROP TABLE x" ON {qs}.{qt} FOR ALL
          USING (tenant_id = current_setting('app.current_tenant_id')::uuid OR true);
        CREATE FUNCTION {qs}."f ""()"" g" () RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
    """)
    assert len(table.encode()) == 63
    got = {(f.rule, f.object) for f in fs if f.schema == schema and f.table == table}
    assert got >= {("policy_exists_rls_disabled", None), ("rls_disabled_with_tenant_column", None),
                   ("weak_rls_policy", "p; DROP TABLE x"), ("tenant_context_cast_unsafe", "p; DROP TABLE x"),
                   ("auth_rls_initplan", "p; DROP TABLE x"), ("tenant_column_nullable", "tenant_id"),
                   ("tenant_fk_missing", "tenant_id"), ("duplicate_index", 'dup "2" b'), ("no_primary_key", None),
                   ("unindexed_foreign_key", 'fk "r" x')}, got
    (fn,) = [f for f in fs if f.rule == "function_search_path_mutable"]
    assert (fn.schema, fn.table, fn.object) == (schema, 'f "()" g', 'f "()" g()')
    assert fn.remediation.startswith(f'ALTER FUNCTION {qs}."f ""()"" g"() SET search_path')
    fixes = [f for f in fs if f.remediation.startswith("dbguard generate-migration")]
    assert fixes
    for f in fixes:
        # the table is one shell word holding the SQL-quoted name: the shell cannot split it or run anything
        assert shlex.split(f.remediation)[3] == f"{qs}.{qt}", f.remediation
    (dup,) = [f for f in fs if f.rule == "duplicate_index"]
    assert dup.remediation == f'DROP INDEX CONCURRENTLY IF EXISTS {qs}."dup ""2"" b";'
    (fk,) = [f for f in fs if f.rule == "unindexed_foreign_key"]
    assert shlex.split(fk.remediation)[4] == 'Ref "Id" x'


ISOLATION_RULES = ("rls_disabled_with_tenant_column", "policy_exists_rls_disabled", "weak_rls_policy",
                   "missing_with_check", "rls_not_forced", "missing_tenant_column", "security_definer_view")


@pytest.mark.security
def test_static_rules_agree_with_the_isolation_probe_styles_guc(empty_dsn):
    """The policy styles the isolation probe proves leaky or safe (isolation_helpers): the static audit must
    name every leaky one and none of the safe ones."""
    from .isolation_helpers import APP, GUC_STYLES_SQL

    run_sql(empty_dsn, GUC_STYLES_SQL)
    snap = introspect(empty_dsn)
    fs = rules.run_rules(snap, None, Config(tenant=TenantModel(app_role=APP)), only=ISOLATION_RULES)
    assert keys(fs) == {
        "rls_disabled_with_tenant_column:public.rls_off",
        "rls_disabled_with_tenant_column:public.tenants",  # the helper leaves the tenants table open
        "weak_rls_policy:public.using_true:p", "missing_with_check:public.using_true:p",
        "missing_with_check:public.check_missing:p",
        "weak_rls_policy:public.function_ignores_tenant:p", "missing_with_check:public.function_ignores_tenant:p",
        "weak_rls_policy:public.blind_only:u", "weak_rls_policy:public.blind_only:d",
        "rls_not_forced:public.owned_by_app",
        "missing_tenant_column:public.child_ok",  # isolated by its parent's RLS, but still no tenant column
        "missing_tenant_column:public.child_leak",
        "security_definer_view:public.owner_view",
    }
    # child_ok's policy reads public.safe_guc, whose own policy pins the tenant: not weak
    assert not [f for f in fs if f.table in ("safe_guc", "invoker_view") or
                (f.table == "child_ok" and f.rule != "missing_tenant_column")]


@pytest.mark.security
def test_static_rules_agree_with_the_isolation_probe_styles_jwt(empty_dsn):
    from .isolation_helpers import JWT_STYLES_SQL, supabase_shim

    run_sql(empty_dsn, supabase_shim() + JWT_STYLES_SQL)
    snap = introspect(empty_dsn)
    fs = rules.run_rules(snap, None, Config(tenant=TenantModel(context="jwt")), only=ISOLATION_RULES)
    assert keys(fs) == {"weak_rls_policy:public.any_user:p", "missing_with_check:public.any_user:p",
                        "rls_disabled_with_tenant_column:public.tenants"}
