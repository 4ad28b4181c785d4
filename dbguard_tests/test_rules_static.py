"""The static audit rules (rls, tenancy, performance, security), each tested both ways against schemas built
in a real PostgreSQL, read with catalog.introspect and judged with rules.run_rules."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from dbguard_pipeline import rules
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.model.findings import Severity

from .conftest import run_sql

SHIM = (Path(__file__).resolve().parents[1] / "dbguard_pipeline" / "demo" / "supabase_shim.sql").read_text()

STATIC_RULES = (
    "rls_disabled_with_tenant_column", "policy_exists_rls_disabled", "weak_rls_policy", "missing_with_check",
    "rls_enabled_no_policy", "rls_not_forced", "tenant_context_cast_unsafe", "missing_tenant_column",
    "tenant_column_nullable", "tenant_fk_missing", "unindexed_foreign_key", "missing_tenant_index",
    "auth_rls_initplan", "multiple_permissive_policies", "duplicate_index", "no_primary_key",
    "security_definer_view", "function_search_path_mutable", "rls_references_user_metadata",
)
SEVERITY = {
    "rls_disabled_with_tenant_column": "critical", "policy_exists_rls_disabled": "critical",
    "weak_rls_policy": "warning", "missing_with_check": "warning", "rls_enabled_no_policy": "info",
    "rls_not_forced": "warning", "tenant_context_cast_unsafe": "warning", "missing_tenant_column": "critical",
    "tenant_column_nullable": "warning", "tenant_fk_missing": "warning", "unindexed_foreign_key": "info",
    "missing_tenant_index": "warning", "auth_rls_initplan": "warning", "multiple_permissive_policies": "warning",
    "duplicate_index": "warning", "no_primary_key": "info", "security_definer_view": "critical",
    "function_search_path_mutable": "warning", "rls_references_user_metadata": "critical",
}
CTX = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
BASE = f"""
CREATE TABLE public.tenants (id uuid PRIMARY KEY, name text NOT NULL);
ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenants_own ON public.tenants FOR SELECT TO authenticated USING (id = {CTX});
CREATE TABLE public.user_tenants (user_id uuid NOT NULL, tenant_id uuid NOT NULL REFERENCES public.tenants,
                                  PRIMARY KEY (tenant_id, user_id));
CREATE INDEX ON public.user_tenants (user_id);
ALTER TABLE public.user_tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY ut_own ON public.user_tenants FOR SELECT TO authenticated USING (user_id = (select auth.uid()));
"""


def audit(dsn, sql, *only, config=None, metrics=None, base=True):
    run_sql(dsn, SHIM + (BASE if base else "") + sql)
    snap = introspect(dsn)
    return rules.run_rules(snap, metrics, config or Config(), only=only or STATIC_RULES)


def keys(findings, rule=None):
    return {f.cache_key for f in findings if rule is None or f.rule == rule}


def tenant_table(name, extra="", schema="public"):
    return (f"CREATE TABLE {schema}.{name} (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants, "
            f"owner_id uuid, parent_id uuid{extra});\nCREATE INDEX ON {schema}.{name} (tenant_id);\n"
            f"ALTER TABLE {schema}.{name} ENABLE ROW LEVEL SECURITY;\n")


def test_registry_has_every_static_rule_with_its_contract_severity():
    registry = rules.all_rules()
    for rid in STATIC_RULES:
        assert rid in registry, rid
        assert registry[rid].severity == Severity(SEVERITY[rid]), rid
        assert registry[rid].title and registry[rid].description
        assert not registry[rid].needs_metrics


@pytest.mark.security
def test_rls_disabled_with_tenant_column(empty_dsn):
    fs = audit(empty_dsn, """
        CREATE TABLE public.open_t (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        CREATE INDEX ON public.open_t (tenant_id);
        CREATE TABLE public.closed_t (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        CREATE INDEX ON public.closed_t (tenant_id);
        ALTER TABLE public.closed_t ENABLE ROW LEVEL SECURITY;
        CREATE TABLE public.countries (code text PRIMARY KEY);  -- global data: no tenant column
        CREATE SCHEMA "Sälës ""Ops"" Dept";
        CREATE TABLE "Sälës ""Ops"" Dept"."Örders; drop" (id int, tenant_id uuid REFERENCES public.tenants, PRIMARY KEY (tenant_id, id));
        CREATE TABLE public.events (id int, tenant_id uuid NOT NULL REFERENCES public.tenants, at date NOT NULL,
                                    PRIMARY KEY (tenant_id, id, at)) PARTITION BY RANGE (at);
        CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE auth.sessions_copy (id int PRIMARY KEY, tenant_id uuid);  -- platform schema: not audited
        ALTER TABLE public.tenants DISABLE ROW LEVEL SECURITY;  -- the tenants themselves, listed to everyone
    """, "rls_disabled_with_tenant_column")
    assert keys(fs) == {"rls_disabled_with_tenant_column:public.open_t",
                        'rls_disabled_with_tenant_column:Sälës "Ops" Dept.Örders; drop',
                        "rls_disabled_with_tenant_column:public.events",
                        "rls_disabled_with_tenant_column:public.tenants"}
    (weird,) = [f for f in fs if f.table == "Örders; drop"]
    assert weird.severity == Severity.CRITICAL and weird.category == "rls"
    assert weird.remediation == 'dbguard generate-migration fix-rls-policy \'"Sälës ""Ops"" Dept"."Örders; drop"\''
    (f,) = [f for f in fs if f.table == "open_t"]
    assert f.remediation == "dbguard generate-migration fix-rls-policy public.open_t"


def test_policy_exists_rls_disabled(empty_dsn):
    fs = audit(empty_dsn, f"""
        CREATE TABLE public.a (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        CREATE POLICY a_iso ON public.a USING (tenant_id = {CTX});
        CREATE TABLE public.lookup (code text PRIMARY KEY);
        CREATE POLICY lookup_read ON public.lookup FOR SELECT USING (true);
        CREATE TABLE public.b (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        ALTER TABLE public.b ENABLE ROW LEVEL SECURITY;
        CREATE POLICY b_iso ON public.b USING (tenant_id = {CTX});
    """, "policy_exists_rls_disabled")
    assert keys(fs) == {"policy_exists_rls_disabled:public.a", "policy_exists_rls_disabled:public.lookup"}
    by = {f.table: f for f in fs}
    assert "fix-rls-policy public.a" in by["a"].remediation
    assert by["lookup"].remediation == "ALTER TABLE public.lookup ENABLE ROW LEVEL SECURITY;"


@pytest.mark.security
def test_weak_rls_policy_true_positives(empty_dsn):
    fs = audit(empty_dsn, "".join([
        tenant_table("t_true"), "CREATE POLICY p ON public.t_true FOR SELECT USING (true);",
        tenant_table("t_anon"), "CREATE POLICY p ON public.t_anon FOR SELECT TO anon USING (1 = 1);",
        tenant_table("t_self"), "CREATE POLICY p ON public.t_self FOR ALL TO authenticated USING (tenant_id = tenant_id);",
        tenant_table("t_role"), "CREATE POLICY \"Authenticated users can read\" ON public.t_role FOR SELECT TO authenticated "
                                "USING (auth.role() = 'authenticated');",
        tenant_table("t_or"), f"CREATE POLICY p ON public.t_or FOR SELECT USING (tenant_id = {CTX} OR owner_id IS NULL);",
        tenant_table("t_uncorr"), "CREATE POLICY p ON public.t_uncorr FOR SELECT USING (EXISTS (SELECT 1 FROM "
                                  "public.user_tenants ut WHERE ut.user_id = (select auth.uid())));",
        tenant_table("t_delete"), "CREATE POLICY p ON public.t_delete FOR DELETE TO authenticated USING ((select true));",
        # a pinned policy next to a weak one: permissive policies are OR-ed, the weak one opens the table
        tenant_table("t_mixed"), f"CREATE POLICY good ON public.t_mixed USING (tenant_id = {CTX});"
                                 "CREATE POLICY bad ON public.t_mixed FOR SELECT USING (true OR tenant_id IS NULL);",
        # the tenants table itself: every tenant's name for everyone
        "CREATE POLICY tenants_all ON public.tenants FOR SELECT USING (true);",
        # a table that is tenant data only through a foreign key
        "CREATE TABLE public.child (id uuid PRIMARY KEY, t_id uuid NOT NULL REFERENCES public.t_true);",
        "CREATE INDEX ON public.child (t_id); ALTER TABLE public.child ENABLE ROW LEVEL SECURITY;",
        "CREATE POLICY child_all ON public.child FOR SELECT USING (true);",
        # membership read from a table nobody restricts: every tenant id is in it
        "CREATE TABLE public.open_members (user_id uuid, tenant_id uuid);",
        tenant_table("t_open_member"), "CREATE POLICY p ON public.t_open_member USING (tenant_id IN "
                                       "(SELECT tenant_id FROM public.open_members));",
    ]), "weak_rls_policy")
    expected = {f"weak_rls_policy:public.{t}:p" for t in ("t_true", "t_anon", "t_self", "t_or", "t_uncorr", "t_delete")}
    expected |= {"weak_rls_policy:public.t_role:Authenticated users can read", "weak_rls_policy:public.t_mixed:bad",
                 "weak_rls_policy:public.tenants:tenants_all", "weak_rls_policy:public.child:child_all",
                 "weak_rls_policy:public.t_open_member:p"}
    assert keys(fs) == expected
    by = {(f.table, f.object): f for f in fs}
    assert "always true" in by[("t_true", "p")].message and by[("t_true", "p")].detail["always_true"]
    assert "does not compare" in by[("t_role", "Authenticated users can read")].message
    assert "written for any tenant" in by[("t_self", "p")].message  # ALL without WITH CHECK: writes too
    assert by[("t_true", "p")].remediation == "dbguard generate-migration fix-rls-policy public.t_true"


@pytest.mark.security
def test_weak_rls_policy_true_negatives(empty_dsn):
    fs = audit(empty_dsn, "".join([
        tenant_table("n_guc"), f"CREATE POLICY p ON public.n_guc USING (tenant_id = {CTX});",
        tenant_table("n_member"), "CREATE POLICY p ON public.n_member FOR SELECT TO authenticated USING (tenant_id IN "
                                  "(SELECT tenant_id FROM public.user_tenants WHERE user_id = (select auth.uid())));",
        tenant_table("n_exists"), "CREATE POLICY p ON public.n_exists FOR SELECT USING (EXISTS (SELECT 1 FROM public.user_tenants m "
                                  "WHERE m.tenant_id = n_exists.tenant_id AND m.user_id = (select auth.uid())));",
        tenant_table("n_jwt"), "CREATE POLICY p ON public.n_jwt USING (tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid);",
        tenant_table("n_owner"), "CREATE POLICY p ON public.n_owner FOR SELECT USING (owner_id = (select auth.uid()));",
        # restrictive tenant policy + permissive role policy: the restrictive one is AND-ed, so isolated
        tenant_table("n_restrict"), f"CREATE POLICY iso ON public.n_restrict AS RESTRICTIVE USING (tenant_id = {CTX});"
                                    "CREATE POLICY read ON public.n_restrict FOR SELECT TO authenticated USING (true);",
        # a restrictive policy that is weak is not a hole by itself (it can only narrow)
        tenant_table("n_weak_restrictive"), f"CREATE POLICY p ON public.n_weak_restrictive USING (tenant_id = {CTX});"
                                            "CREATE POLICY r ON public.n_weak_restrictive AS RESTRICTIVE USING (true);",
        # service_role bypasses RLS anyway: its USING (true) policy is moot
        tenant_table("n_service"), f"CREATE POLICY p ON public.n_service USING (tenant_id = {CTX});"
                                   "CREATE POLICY service ON public.n_service TO service_role USING (true);",
        # INSERT policies have no USING: judged by missing_with_check
        tenant_table("n_insert"), "CREATE POLICY p ON public.n_insert FOR INSERT WITH CHECK (true);",
        # global reference data readable by everyone is fine
        "CREATE TABLE public.countries (code text PRIMARY KEY); ALTER TABLE public.countries ENABLE ROW LEVEL SECURITY;",
        "CREATE POLICY read ON public.countries FOR SELECT USING (true);",
        # a child without tenant column, restricted through its parent
        "CREATE TABLE public.child (id uuid PRIMARY KEY, n_id uuid NOT NULL REFERENCES public.n_guc);",
        "ALTER TABLE public.child ENABLE ROW LEVEL SECURITY;",
        f"CREATE POLICY p ON public.child USING (EXISTS (SELECT 1 FROM public.n_guc g WHERE g.id = child.n_id AND g.tenant_id = {CTX}));",
        # membership read from user_tenants, whose own policy shows each user only their rows (RLS applies
        # inside policy subqueries): Supabase's common "tenant_id IN (SELECT tenant_id FROM members)"
        tenant_table("n_rls_member"), "CREATE POLICY p ON public.n_rls_member USING (tenant_id IN "
                                      "(SELECT tenant_id FROM public.user_tenants));",
        "CREATE TABLE public.child2 (id uuid PRIMARY KEY, n_id uuid NOT NULL REFERENCES public.n_guc);",
        "ALTER TABLE public.child2 ENABLE ROW LEVEL SECURITY;",
        "CREATE POLICY p ON public.child2 USING (EXISTS (SELECT 1 FROM public.n_guc g WHERE g.id = child2.n_id));",
    ]), "weak_rls_policy")
    assert keys(fs) == set()


@pytest.mark.security
def test_weak_rls_policy_non_public_schema_unicode_and_integer_ids(empty_dsn):
    cfg = Config(tenant=TenantModel(column="Mandant Nr", column_type="bigint", tenants_table="crm.mandanten"))
    fs = audit(empty_dsn, """
        CREATE SCHEMA crm;
        CREATE TABLE crm.mandanten (id bigint PRIMARY KEY);
        CREATE TABLE crm."Kündën" (id bigint PRIMARY KEY, "Mandant Nr" bigint NOT NULL REFERENCES crm.mandanten);
        CREATE INDEX ON crm."Kündën" ("Mandant Nr");
        ALTER TABLE crm."Kündën" ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "gut" ON crm."Kündën" USING ("Mandant Nr" = nullif(current_setting('app.current_tenant_id', true), '')::bigint);
        CREATE POLICY "schlecht ""x"" p" ON crm."Kündën" FOR SELECT USING ("Kündën"."Mandant Nr" = "Mandant Nr");
    """, "weak_rls_policy", config=cfg, base=False)
    assert keys(fs) == {'weak_rls_policy:crm.Kündën:schlecht "x" p'}
    (f,) = fs
    assert f.remediation == 'dbguard generate-migration fix-rls-policy \'crm."Kündën"\''


@pytest.mark.security
def test_weak_rls_policy_jwt_tenancy_and_text_ids(empty_dsn):
    cfg = Config(tenant=TenantModel(context="jwt", column="org", column_type="text", jwt_claim="org",
                                    tenants_table="public.orgs", tenants_key="slug"))
    fs = audit(empty_dsn, """
        CREATE TABLE public.orgs (slug text PRIMARY KEY);
        CREATE TABLE public.docs (id int PRIMARY KEY, org text NOT NULL REFERENCES public.orgs);
        CREATE INDEX ON public.docs (org);
        ALTER TABLE public.docs ENABLE ROW LEVEL SECURITY;
        CREATE POLICY jwt_ok ON public.docs FOR SELECT TO authenticated USING (org = (select auth.jwt() ->> 'org'));
        CREATE POLICY jwt_sub_only ON public.docs FOR DELETE TO authenticated USING ((select auth.jwt() ->> 'sub') IS NOT NULL);
    """, "weak_rls_policy", config=cfg, base=False)
    assert keys(fs) == {"weak_rls_policy:public.docs:jwt_sub_only"}


@pytest.mark.security
def test_weak_rls_policy_function_context_and_configured_function(empty_dsn):
    sql = tenant_table("f_body") + tenant_table("f_conf") + tenant_table("f_member") + """
        CREATE FUNCTION public.current_tenant_id() RETURNS uuid LANGUAGE sql STABLE SET search_path = ''
          AS $$ SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid $$;
        -- SECURITY DEFINER: the tenants' own RLS does not apply inside, so nothing ties the result to the caller
        CREATE FUNCTION public.session_tenant() RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
          AS $$ SELECT id FROM public.tenants ORDER BY id LIMIT 1 $$;
        CREATE FUNCTION public.visible_tenant() RETURNS uuid LANGUAGE sql STABLE SET search_path = ''
          AS $$ SELECT id FROM public.tenants ORDER BY id LIMIT 1 $$;
        CREATE FUNCTION public.has_tenant_access(t uuid) RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER
          SET search_path = '' AS $$ BEGIN RETURN EXISTS (SELECT 1 FROM public.user_tenants ut
            WHERE ut.tenant_id = has_tenant_access.t AND ut.user_id = (SELECT auth.uid())); END $$;
        CREATE POLICY p ON public.f_body USING (tenant_id = (select public.current_tenant_id()));
        CREATE POLICY p ON public.f_conf USING (tenant_id = (select public.session_tenant()));
        CREATE POLICY p ON public.f_member USING ((select public.has_tenant_access(tenant_id)));
        -- the invoker's rights: tenants' policy (id = context) filters what the function can see
        CREATE POLICY p2 ON public.f_body FOR SELECT USING (tenant_id = (select public.visible_tenant()));
    """
    fs = audit(empty_dsn, sql, "weak_rls_policy")
    assert keys(fs) == {"weak_rls_policy:public.f_conf:p"}  # its body is no tenant context
    snap = introspect(empty_dsn)
    cfg = Config(tenant=TenantModel(context_functions=("public.session_tenant",)))
    assert rules.run_rules(snap, None, cfg, only=["weak_rls_policy"]) == []


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


@pytest.mark.security
def test_missing_with_check(empty_dsn):
    fs = audit(empty_dsn, "".join([
        tenant_table("w_insert_true"), "CREATE POLICY p ON public.w_insert_true FOR INSERT TO authenticated WITH CHECK (true);",
        tenant_table("w_update_open"), f"CREATE POLICY p ON public.w_update_open FOR UPDATE USING (tenant_id = {CTX}) WITH CHECK (true);",
        tenant_table("w_owner"), "CREATE POLICY p ON public.w_owner FOR ALL USING (owner_id = (select auth.uid()));",
        tenant_table("w_insert_owner"), "CREATE POLICY p ON public.w_insert_owner FOR INSERT WITH CHECK (owner_id = (select auth.uid()));",
        # negatives
        tenant_table("ok_all"), f"CREATE POLICY p ON public.ok_all FOR ALL USING (tenant_id = {CTX}) WITH CHECK (tenant_id = {CTX});",
        tenant_table("ok_using_only"), f"CREATE POLICY p ON public.ok_using_only FOR ALL USING (tenant_id = {CTX});",
        tenant_table("ok_insert"), "CREATE POLICY p ON public.ok_insert FOR INSERT WITH CHECK (tenant_id IN "
                                   "(SELECT tenant_id FROM public.user_tenants WHERE user_id = (select auth.uid())));",
        tenant_table("ok_select_true"), "CREATE POLICY p ON public.ok_select_true FOR SELECT USING (true);",
        # ALL USING (true) without WITH CHECK: reported once, as weak_rls_policy
        tenant_table("weak_all"), "CREATE POLICY p ON public.weak_all FOR ALL USING (true);",
        # a restrictive WITH CHECK that pins the tenant covers the open permissive one
        tenant_table("ok_restrictive"), f"CREATE POLICY p ON public.ok_restrictive FOR INSERT WITH CHECK (true);"
                                       f"CREATE POLICY r ON public.ok_restrictive AS RESTRICTIVE FOR ALL USING (tenant_id = {CTX});",
        "CREATE POLICY signup ON public.tenants FOR INSERT TO authenticated WITH CHECK (true);",
    ]), "missing_with_check", "weak_rls_policy")
    assert keys(fs, "missing_with_check") == {f"missing_with_check:public.{t}:p" for t in (
        "w_insert_true", "w_update_open", "w_owner", "w_insert_owner")}
    assert keys(fs, "weak_rls_policy") == {"weak_rls_policy:public.ok_select_true:p", "weak_rls_policy:public.weak_all:p"}
    by = {f.table: f for f in fs if f.rule == "missing_with_check"}
    assert "no WITH CHECK" in by["w_owner"].message and "its WITH CHECK" in by["w_update_open"].message


def test_rls_enabled_no_policy(empty_dsn):
    fs = audit(empty_dsn, tenant_table("closed") + tenant_table("open_") +
               f"CREATE POLICY p ON public.open_ USING (tenant_id = {CTX});"
               "CREATE TABLE public.plain (id int PRIMARY KEY);", "rls_enabled_no_policy")
    assert keys(fs) == {"rls_enabled_no_policy:public.closed"}
    assert fs[0].severity == Severity.INFO


@pytest.mark.security
def test_rls_not_forced(empty_dsn):
    run_sql(empty_dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dbguard_test_app') "
                       "THEN CREATE ROLE dbguard_test_app NOLOGIN; END IF; END $$;")
    sql = tenant_table("owned") + tenant_table("forced") + tenant_table("other") + f"""
        ALTER TABLE public.owned OWNER TO dbguard_test_app;
        ALTER TABLE public.forced OWNER TO dbguard_test_app;
        ALTER TABLE public.forced FORCE ROW LEVEL SECURITY;
        CREATE POLICY p ON public.owned USING (tenant_id = {CTX});
    """
    fs = audit(empty_dsn, sql, "rls_not_forced", config=Config(tenant=TenantModel(app_role="dbguard_test_app")))
    assert keys(fs) == {"rls_not_forced:public.owned"}
    snap = introspect(empty_dsn)
    assert rules.run_rules(snap, None, Config(), only=["rls_not_forced"]) == []  # app role authenticated owns nothing
    owns = Config(tenant=TenantModel(app_role_owns_tables=True))
    assert {f.table for f in rules.run_rules(snap, None, owns, only=["rls_not_forced"])} == {
        "owned", "other", "tenants", "user_tenants"}


def test_tenant_context_cast_unsafe(empty_dsn):
    fs = audit(empty_dsn, "".join([
        tenant_table("c_uuid"), "CREATE POLICY p ON public.c_uuid USING (tenant_id = current_setting('app.current_tenant_id', true)::uuid);",
        tenant_table("c_cast"), "CREATE POLICY p ON public.c_cast FOR INSERT WITH CHECK (tenant_id = CAST(current_setting('app.current_tenant_id') AS uuid));",
        tenant_table("c_fn"), """CREATE FUNCTION public.tid() RETURNS uuid LANGUAGE sql STABLE SET search_path = ''
                                 AS $$ SELECT current_setting('app.current_tenant_id')::uuid $$;
                                 CREATE POLICY p ON public.c_fn USING (tenant_id = (select public.tid()));""",
        tenant_table("ok_nullif"), f"CREATE POLICY p ON public.ok_nullif USING (tenant_id = {CTX});",
        tenant_table("ok_text"), "CREATE POLICY p ON public.ok_text USING (tenant_id::text = (select current_setting('app.current_tenant_id', true)));",
    ]), "tenant_context_cast_unsafe")
    assert keys(fs) == {f"tenant_context_cast_unsafe:public.{t}:p" for t in ("c_uuid", "c_cast", "c_fn")}
    by = {f.table: f for f in fs}
    assert "public.tid()" in by["c_fn"].message and "::uuid" in by["c_uuid"].message


def test_missing_tenant_column(empty_dsn):
    fs = audit(empty_dsn, tenant_table("orders") + """
        CREATE TABLE public.order_lines (id int PRIMARY KEY, order_id uuid NOT NULL REFERENCES public.orders);
        CREATE TABLE public.line_notes (id int PRIMARY KEY, line_id int REFERENCES public.order_lines);
        CREATE TABLE public.countries (code text PRIMARY KEY);
        CREATE TABLE public.addresses (id int PRIMARY KEY, country text REFERENCES public.countries);
        CREATE TABLE public.user_prefs (user_id uuid PRIMARY KEY REFERENCES auth.users);
        CREATE TABLE public.org_settings (org uuid PRIMARY KEY REFERENCES public.tenants);
    """, "missing_tenant_column")
    assert keys(fs) == {"missing_tenant_column:public.order_lines", "missing_tenant_column:public.line_notes",
                        "missing_tenant_column:public.org_settings"}
    by = {f.table: f for f in fs}
    assert by["line_notes"].detail["path"] == ["public.line_notes(line_id) -> public.order_lines",
                                                "public.order_lines(order_id) -> public.orders"]
    assert by["order_lines"].remediation == "dbguard generate-migration add-tenant-isolation public.order_lines"
    assert by["order_lines"].severity == Severity.CRITICAL


def test_tenant_column_nullable(empty_dsn):
    fs = audit(empty_dsn, """
        CREATE TABLE public.loose (id int PRIMARY KEY, tenant_id uuid REFERENCES public.tenants);
        CREATE TABLE public.strict (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
    """, "tenant_column_nullable")
    assert keys(fs) == {"tenant_column_nullable:public.loose:tenant_id"}
    assert "SET NOT NULL" in fs[0].remediation and "NOT VALID" in fs[0].remediation


def test_tenant_fk_missing(empty_dsn):
    fs = audit(empty_dsn, """
        CREATE TABLE public.no_fk (id int PRIMARY KEY, tenant_id uuid NOT NULL);
        CREATE TABLE public.other (id uuid PRIMARY KEY);
        CREATE TABLE public.wrong_fk (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.other);
        CREATE TABLE public.good (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        CREATE TABLE public.not_valid (id int PRIMARY KEY, tenant_id uuid NOT NULL);
        ALTER TABLE public.not_valid ADD FOREIGN KEY (tenant_id) REFERENCES public.tenants NOT VALID;
    """, "tenant_fk_missing")
    assert keys(fs) == {"tenant_fk_missing:public.no_fk:tenant_id", "tenant_fk_missing:public.wrong_fk:tenant_id"}
    by = {f.table: f for f in fs}
    assert by["no_fk"].remediation == "dbguard generate-migration add-foreign-key public.no_fk public.tenants"


def test_unindexed_foreign_key(empty_dsn):
    fs = audit(empty_dsn, """
        CREATE TABLE public.parent (id int PRIMARY KEY, k int, UNIQUE (id, k));
        CREATE TABLE public.c_none (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
        CREATE TABLE public.c_second (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
        CREATE INDEX ON public.c_second (id, parent_id);
        CREATE TABLE public.c_partial (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
        CREATE INDEX ON public.c_partial (parent_id) WHERE parent_id > 0;
        CREATE TABLE public.c_ok (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
        CREATE INDEX ON public.c_ok (parent_id, id);
        CREATE TABLE public.c_comp (id int, parent_id int, k int, PRIMARY KEY (k, parent_id, id),
                                    FOREIGN KEY (parent_id, k) REFERENCES public.parent (id, k));
        CREATE TABLE public."C ""Wëird"" T" (id int PRIMARY KEY, "Parent Id" int REFERENCES public.parent);
    """, "unindexed_foreign_key")
    assert keys(fs) == {"unindexed_foreign_key:public.c_none:c_none_parent_id_fkey",
                        "unindexed_foreign_key:public.c_second:c_second_parent_id_fkey",
                        "unindexed_foreign_key:public.c_partial:c_partial_parent_id_fkey",
                        'unindexed_foreign_key:public.C "Wëird" T:C "Wëird" T_Parent Id_fkey'}
    by = {f.table: f for f in fs}
    assert by["c_none"].remediation == "dbguard generate-migration add-composite-index public.c_none parent_id"
    assert by['C "Wëird" T'].remediation == ('dbguard generate-migration add-composite-index '
                                             '\'public."C ""Wëird"" T"\' \'Parent Id\'')


def test_missing_tenant_index(empty_dsn):
    sql = """
        CREATE TABLE public.big (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        CREATE TABLE public.big_indexed (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        CREATE INDEX ON public.big_indexed (tenant_id, id);
        CREATE TABLE public.small (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        CREATE TABLE public.estimated (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants);
        INSERT INTO public.tenants VALUES ('00000000-0000-0000-0000-000000000001', 'a');
        INSERT INTO public.estimated SELECT g, '00000000-0000-0000-0000-000000000001' FROM generate_series(1, 300) g;
        ANALYZE public.estimated;
    """
    metrics = {"public.big": SimpleNamespace(rows=50_000), "public.big_indexed": SimpleNamespace(rows=50_000),
               "public.small": SimpleNamespace(rows=10), "public.estimated": SimpleNamespace(rows=None)}
    fs = audit(empty_dsn, sql, "missing_tenant_index", metrics=metrics)
    assert keys(fs) == {"missing_tenant_index:public.big:tenant_id"}
    assert fs[0].detail["rows"] == 50_000 and fs[0].remediation.endswith("add-composite-index public.big tenant_id")
    snap = introspect(empty_dsn)
    low = Config(tenant_index_min_rows=100)
    # unmeasured: the catalog estimate (300 rows after ANALYZE) decides; never-analyzed tables are not guessed
    got = rules.run_rules(snap, metrics, low, only=["missing_tenant_index"])
    assert keys(got) == {"missing_tenant_index:public.big:tenant_id", "missing_tenant_index:public.estimated:tenant_id"}
    assert {f.table: f.detail["rows_source"] for f in got} == {"big": "measured", "estimated": "estimated"}
    assert rules.run_rules(snap, None, Config(), only=["missing_tenant_index"]) == []


def test_auth_rls_initplan(empty_dsn):
    fs = audit(empty_dsn, "".join([
        tenant_table("i_uid"), "CREATE POLICY p ON public.i_uid FOR SELECT USING (owner_id = auth.uid());",
        tenant_table("i_guc"), "CREATE POLICY p ON public.i_guc FOR INSERT WITH CHECK (tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid);",
        tenant_table("i_jwt"), "CREATE POLICY p ON public.i_jwt USING (tenant_id = (auth.jwt() ->> 'tenant_id')::uuid);",
        tenant_table("i_member"), "CREATE POLICY p ON public.i_member USING (tenant_id IN (SELECT tenant_id FROM public.user_tenants WHERE user_id = auth.uid()));",
        tenant_table("ok_wrapped"), "CREATE POLICY p ON public.ok_wrapped USING (owner_id = (select auth.uid()));",
        tenant_table("ok_ctx"), f"CREATE POLICY p ON public.ok_ctx USING (tenant_id = {CTX});",
        tenant_table("ok_member"), "CREATE POLICY p ON public.ok_member USING (tenant_id IN (SELECT tenant_id FROM public.user_tenants WHERE user_id = (select auth.uid())));",
    ]), "auth_rls_initplan")
    assert keys(fs) == {f"auth_rls_initplan:public.{t}:p" for t in ("i_uid", "i_guc", "i_jwt", "i_member")}
    by = {f.table: f for f in fs}
    assert by["i_uid"].detail["calls"] == ["auth.uid()"] and by["i_guc"].detail["calls"] == ["current_setting()"]
    assert by["i_uid"].category == "performance"


def test_multiple_permissive_policies(empty_dsn):
    fs = audit(empty_dsn, "".join([
        tenant_table("m_two"), f"CREATE POLICY a ON public.m_two FOR SELECT TO authenticated USING (tenant_id = {CTX});"
                               "CREATE POLICY b ON public.m_two FOR SELECT TO authenticated USING (owner_id = (select auth.uid()));",
        tenant_table("m_all"), f"CREATE POLICY a ON public.m_all FOR ALL USING (tenant_id = {CTX});"
                               "CREATE POLICY b ON public.m_all FOR UPDATE TO authenticated USING (owner_id = (select auth.uid()));",
        tenant_table("ok_restrictive"), f"CREATE POLICY a ON public.ok_restrictive USING (tenant_id = {CTX});"
                                        "CREATE POLICY b ON public.ok_restrictive AS RESTRICTIVE USING (owner_id IS NOT NULL);",
        tenant_table("ok_roles"), f"CREATE POLICY a ON public.ok_roles FOR SELECT TO anon USING (tenant_id = {CTX});"
                                  f"CREATE POLICY b ON public.ok_roles FOR SELECT TO authenticated USING (tenant_id = {CTX});",
        tenant_table("ok_commands"), f"CREATE POLICY a ON public.ok_commands FOR SELECT USING (tenant_id = {CTX});"
                                     f"CREATE POLICY b ON public.ok_commands FOR INSERT WITH CHECK (tenant_id = {CTX});",
        tenant_table("ok_service"), f"CREATE POLICY a ON public.ok_service USING (tenant_id = {CTX});"
                                    "CREATE POLICY b ON public.ok_service TO service_role USING (true);",
    ]), "multiple_permissive_policies")
    assert keys(fs) == {"multiple_permissive_policies:public.m_two:a, b", "multiple_permissive_policies:public.m_all:a, b"}
    by = {f.table: f for f in fs}
    assert by["m_all"].detail["commands"] == ["update"] and "authenticated" in by["m_all"].detail["roles"]


def test_duplicate_index(empty_dsn):
    fs = audit(empty_dsn, """
        CREATE TABLE public.d (id int PRIMARY KEY, a int, b int, c text);
        CREATE INDEX d_a_1 ON public.d (a);
        CREATE INDEX d_a_2 ON public.d (a);
        CREATE INDEX d_ab ON public.d (a, b);
        CREATE INDEX d_ba ON public.d (b, a);
        CREATE INDEX d_a_partial ON public.d (a) WHERE b > 0;
        CREATE INDEX d_id ON public.d (id);
        CREATE INDEX "D Ç" ON public.d (lower(c));
        CREATE INDEX "D Ç 2" ON public.d (lower(c));
        CREATE TABLE public.e (id int PRIMARY KEY, a int, b int);
        CREATE INDEX e_a ON public.e (a);
        CREATE INDEX e_a_desc ON public.e (a DESC);
        CREATE INDEX e_a_hash ON public.e USING hash (a);
    """, "duplicate_index")
    assert keys(fs) == {"duplicate_index:public.d:d_a_2", "duplicate_index:public.d:d_id", "duplicate_index:public.d:D Ç 2"}
    by = {f.object: f for f in fs}
    assert by["d_id"].detail["kept"] == "d_pkey"
    assert by["d_a_2"].remediation == "DROP INDEX CONCURRENTLY IF EXISTS public.d_a_2;"
    assert by["D Ç 2"].remediation == 'DROP INDEX CONCURRENTLY IF EXISTS public."D Ç 2";'


def test_no_primary_key(empty_dsn):
    fs = audit(empty_dsn, """
        CREATE TABLE public.nopk (a int NOT NULL, b int);
        CREATE UNIQUE INDEX nopk_a ON public.nopk (a);
        CREATE TABLE public.nopk2 (a int);
        CREATE TABLE public.haspk (a int PRIMARY KEY);
    """, "no_primary_key")
    assert keys(fs) == {"no_primary_key:public.nopk", "no_primary_key:public.nopk2"}
    by = {f.table: f for f in fs}
    assert by["nopk"].remediation == "ALTER TABLE public.nopk ADD PRIMARY KEY USING INDEX nopk_a;"


@pytest.mark.security
def test_security_definer_view(empty_dsn):
    run_sql(empty_dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dbguard_test_viewer') "
                       "THEN CREATE ROLE dbguard_test_viewer NOLOGIN; END IF; END $$;")
    fs = audit(empty_dsn, tenant_table("secret") + tenant_table("open_t").replace(
        "ALTER TABLE public.open_t ENABLE ROW LEVEL SECURITY;", "") + """
        CREATE VIEW public.v_leak AS SELECT id, tenant_id FROM public.secret;
        GRANT SELECT ON public.v_leak TO anon;
        CREATE VIEW public.v_invoker WITH (security_invoker = true) AS SELECT id FROM public.secret;
        GRANT SELECT ON public.v_invoker TO authenticated;
        CREATE VIEW public.v_private AS SELECT id FROM public.secret;  -- granted to no API role
        CREATE VIEW public.v_no_rls AS SELECT id FROM public.open_t;
        GRANT SELECT ON public.v_no_rls TO authenticated;
        CREATE SCHEMA internal;
        CREATE VIEW internal.v_hidden AS SELECT id FROM public.secret;
        GRANT SELECT ON internal.v_hidden TO authenticated;
        CREATE VIEW public.v_owned AS SELECT id FROM public.secret;
        GRANT SELECT ON public.secret TO dbguard_test_viewer;
        ALTER VIEW public.v_owned OWNER TO dbguard_test_viewer;  -- an owner subject to RLS
        GRANT SELECT ON public.v_owned TO authenticated;
        CREATE VIEW public.v_chain WITH (security_invoker = true) AS SELECT id FROM internal.v_hidden;
        GRANT SELECT ON public.v_chain TO authenticated;
        CREATE MATERIALIZED VIEW public.mv AS SELECT id FROM public.secret;
        GRANT SELECT ON public.mv TO anon;
    """, "security_definer_view")
    assert keys(fs) == {"security_definer_view:public.v_leak", "security_definer_view:public.v_chain",
                        "security_definer_view:public.mv"}
    by = {f.table: f for f in fs}
    assert by["v_leak"].remediation == "ALTER VIEW public.v_leak SET (security_invoker = true);"
    assert by["v_leak"].detail["tables"] == ["public.secret"] and by["v_leak"].detail["grantees"] == ["anon"]
    assert by["mv"].detail["materialized"]
    # the invoker view is the exposed door to a definer view in a private schema
    assert by["v_chain"].remediation == "ALTER VIEW internal.v_hidden SET (security_invoker = true);"


def test_function_search_path_mutable(empty_dsn):
    fs = audit(empty_dsn, """
        CREATE FUNCTION public.loose(a int) RETURNS int LANGUAGE sql AS $$ SELECT a $$;
        CREATE FUNCTION public.loose_definer() RETURNS int LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN RETURN 1; END $$;
        CREATE FUNCTION public.fixed() RETURNS int LANGUAGE sql SET search_path = '' AS $$ SELECT 1 $$;
        CREATE FUNCTION public.fixed2() RETURNS int LANGUAGE sql SET search_path = pg_catalog, public AS $$ SELECT 1 $$;
        CREATE FUNCTION auth.platform() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
        CREATE SCHEMA "Äpp";
        CREATE FUNCTION "Äpp"."Dö It"(x text) RETURNS text LANGUAGE sql AS $$ SELECT x $$;
    """, "function_search_path_mutable")
    assert keys(fs) == {"function_search_path_mutable:public.loose:loose(a integer)",
                        "function_search_path_mutable:public.loose_definer:loose_definer()",
                        "function_search_path_mutable:Äpp.Dö It:Dö It(x text)"}
    by = {f.table: f for f in fs}
    assert "SECURITY DEFINER" in by["loose_definer"].message and by["loose_definer"].detail["security_definer"]
    assert by["Dö It"].remediation.startswith("""ALTER FUNCTION "Äpp"."Dö It"(x text) SET search_path = '';""")


@pytest.mark.security
def test_rls_references_user_metadata(empty_dsn):
    fs = audit(empty_dsn, "".join([
        tenant_table("u_jwt"), "CREATE POLICY p ON public.u_jwt USING (tenant_id = ((select auth.jwt()) -> 'user_metadata' ->> 'tenant_id')::uuid);",
        tenant_table("u_raw"), "CREATE POLICY p ON public.u_raw FOR SELECT USING (tenant_id = (SELECT (u.raw_user_meta_data ->> 'tenant_id')::uuid "
                               "FROM auth.users u WHERE u.id = (select auth.uid())));",
        tenant_table("u_fn"), """CREATE FUNCTION public.meta_role() RETURNS text LANGUAGE sql STABLE SET search_path = ''
                                 AS $$ SELECT auth.jwt() #>> '{user_metadata,role}' $$;
                                 CREATE POLICY p ON public.u_fn FOR DELETE USING ((select public.meta_role()) = 'admin');""",
        tenant_table("ok_app"), "CREATE POLICY p ON public.ok_app USING (tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid);",
    ]), "rls_references_user_metadata")
    assert keys(fs) == {f"rls_references_user_metadata:public.{t}:p" for t in ("u_jwt", "u_raw", "u_fn")}
    assert all(f.severity == Severity.CRITICAL and f.category == "security" for f in fs)
    assert "public.meta_role()" in {f.table: f for f in fs}["u_fn"].message


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
