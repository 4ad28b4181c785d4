"""Policy expression analysis (dbguard_pipeline.policy) on policies created in a real PostgreSQL and read
back the way the audit reads them (pg_get_expr through catalog.introspect)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dbguard_pipeline import policy as pol
from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.pg.catalog import introspect

from .conftest import Databases, run_sql

SHIM = (Path(__file__).resolve().parents[1] / "dbguard_pipeline" / "demo" / "supabase_shim.sql").read_text()

SCHEMA = r'''
CREATE TABLE public.tenants (id uuid PRIMARY KEY, owner_id uuid);
CREATE TABLE public.user_tenants (user_id uuid, tenant_id uuid REFERENCES public.tenants, PRIMARY KEY (user_id, tenant_id));
CREATE TABLE public.profiles (id uuid PRIMARY KEY, tenant_id uuid);
CREATE TABLE public.projects (id uuid PRIMARY KEY, tenant_id uuid);
CREATE TABLE public.t (id uuid, tenant_id uuid, user_id uuid, project_id uuid, is_public boolean,
                       deleted_at timestamptz, member_ids uuid[]);
CREATE TABLE public.t_int (id bigint, tenant_id bigint);
CREATE TABLE public.t_text (id bigint, tenant_id text);
CREATE TABLE public.t_org (id bigint, org_id uuid);
CREATE SCHEMA "Ünï Schema";
CREATE TABLE "Ünï Schema"."Tëst ""Table""" (id int, "Tenant Id" uuid);

CREATE FUNCTION public.current_tenant_id() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid $$;
CREATE FUNCTION public.jwt_tenant() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT (auth.jwt() -> 'app_metadata' ->> 'tenant_id')::uuid $$;
CREATE FUNCTION public.my_tenant() RETURNS uuid LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
  AS $$ DECLARE tid uuid; BEGIN SELECT p.tenant_id INTO tid FROM public.profiles p WHERE p.id = auth.uid(); RETURN tid; END $$;
CREATE FUNCTION public.my_tenants() RETURNS SETOF uuid LANGUAGE sql STABLE SECURITY DEFINER
  AS $$ SELECT tenant_id FROM public.user_tenants WHERE user_id = auth.uid() $$;
CREATE FUNCTION public.is_member(_tenant uuid) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
  AS $$ SELECT EXISTS (SELECT 1 FROM public.user_tenants ut WHERE ut.tenant_id = _tenant AND ut.user_id = auth.uid()) $$;
CREATE FUNCTION public.is_member_plpgsql(p_tenant uuid) RETURNS boolean LANGUAGE plpgsql STABLE
  AS $$ BEGIN
    RETURN EXISTS (SELECT 1 FROM public.user_tenants WHERE user_tenants.tenant_id = p_tenant
                   AND user_tenants.user_id = (SELECT auth.uid()));
  END $$;
CREATE FUNCTION public.is_admin() RETURNS boolean LANGUAGE sql STABLE
  AS $$ SELECT coalesce((auth.jwt() ->> 'is_admin')::boolean, false) $$;
CREATE FUNCTION public.allow_all() RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT true $$;
CREATE FUNCTION public.opaque_tenant() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT id FROM public.tenants ORDER BY id LIMIT 1 $$;
CREATE FUNCTION public.ignores_arg(_tenant uuid) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT _tenant IS NOT NULL $$;
CREATE FUNCTION public.unsafe_tenant() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT current_setting('app.current_tenant_id')::uuid $$;
CREATE FUNCTION public.meta_tenant() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT (auth.jwt() -> 'user_metadata' ->> 'tenant_id')::uuid $$;
CREATE FUNCTION public.has_role_on_account(account_id uuid, account_role text DEFAULT NULL) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT EXISTS (SELECT 1 FROM public.user_tenants wu WHERE wu.user_id = auth.uid()
    AND wu.tenant_id = has_role_on_account.account_id
    AND (has_role_on_account.account_role IS NULL OR has_role_on_account.account_role = 'owner')) $$;
CREATE FUNCTION public.get_my_claim(claim text) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb -> 'app_metadata' -> claim, null) $$;
CREATE FUNCTION public.owner_id_is(u uuid) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT u = auth.uid() $$;
CREATE FUNCTION public.ctx() RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT current_setting('app.ctx', true)::uuid $$;
'''

ALWAYS_TRUE = {
    "true_lit": "true",
    "true_1eq1": "1 = 1",
    "true_strings": "'a' = 'a'",
    "true_select": "(select true)",
    "true_selfcol": "tenant_id = tenant_id",
    "true_qualified_self": "t.tenant_id = tenant_id",
    "true_or": "true or tenant_id = public.current_tenant_id()",
    "true_not_false": "not false",
    "true_coalesce": "coalesce(true, false)",
    "true_isnotnull_or": "deleted_at is not null or true",
    "true_nested_casts": "((((true)::boolean)))",
    "true_case": "case when is_public then true else true end",
    "true_text_cast": "'t'::boolean",
    "true_exists_nofrom": "exists (select 1)",
    "true_is_true": "true is true",
    "true_in_list": "1 in (1, 2)",
    "true_function": "public.allow_all()",
    "true_and": "true and 2 > 1",
    "true_select_cast_text": "(select 'yes'::text) = 'yes'",
}
NOT_ALWAYS_TRUE = {
    "nt_pinned": "tenant_id = public.current_tenant_id()",
    "nt_col": "is_public",
    "nt_false_or": "false or is_public",
    "nt_auth": "auth.uid() is not null",
    "nt_coalesce": "coalesce(is_public, true)",
    "nt_exists_table": "exists (select 1 from public.tenants)",
    "nt_in_col": "tenant_id in (select tenant_id from public.user_tenants)",
    "nt_false": "1 = 2",
    "nt_interval": "interval '1 day' = interval '24 hours' or is_public",
}

PINS = {
    "pin_guc_nullif_select": "tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)",
    "pin_guc_cast": "tenant_id = current_setting('app.current_tenant_id')::uuid",
    "pin_guc_cast_fn": "tenant_id = CAST(current_setting('app.current_tenant_id', true) AS uuid)",
    "pin_guc_text": "tenant_id::text = current_setting('app.current_tenant_id', true)",
    "pin_reversed": "current_setting('app.current_tenant_id')::uuid = tenant_id",
    "pin_qualified": "t.tenant_id = public.current_tenant_id()",
    "pin_and_extra": "deleted_at IS NULL AND tenant_id = (select public.current_tenant_id())",
    "pin_or_both": "(tenant_id = public.current_tenant_id() and is_public) or "
    "(tenant_id = public.current_tenant_id() and deleted_at is null)",
    "pin_or_false": "tenant_id = public.current_tenant_id() or 1 = 0",
    "pin_jwt": "tenant_id = (auth.jwt() ->> 'tenant_id')::uuid",
    "pin_jwt_app_metadata": "tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid",
    "pin_jwt_claims_guc": "tenant_id = (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid",
    "pin_jwt_path": "tenant_id::text = auth.jwt() #>> '{app_metadata,tenant_id}'",
    "pin_fn_sql": "tenant_id = public.current_tenant_id()",
    "pin_fn_jwt": "tenant_id = public.jwt_tenant()",
    "pin_fn_plpgsql_var": "tenant_id = (select public.my_tenant())",
    "pin_membership_in": "tenant_id in (select user_tenants.tenant_id from public.user_tenants "
    "where user_tenants.user_id = auth.uid())",
    "pin_membership_exists": "exists (select 1 from public.user_tenants m where m.tenant_id = t.tenant_id "
    "and m.user_id = (select auth.uid()))",
    "pin_membership_any": "tenant_id = any (array(select ut.tenant_id from public.user_tenants ut "
    "where ut.user_id = auth.uid()))",
    "pin_membership_setof_fn": "tenant_id in (select public.my_tenants())",
    "pin_membership_fn_bool": "public.is_member(tenant_id)",
    "pin_membership_plpgsql_bool": "(select public.is_member_plpgsql(tenant_id))",
    "pin_membership_join": "tenant_id in (select p.tenant_id from public.projects p join public.user_tenants ut "
    "on ut.tenant_id = p.tenant_id where ut.user_id = auth.uid())",
    "pin_scalar_lookup": "tenant_id = (select p.tenant_id from public.profiles p where p.id = auth.uid())",
    "pin_is_true": "(tenant_id = public.current_tenant_id()) is true",
    "pin_owner_of_tenant": "tenant_id in (select id from public.tenants where owner_id = auth.uid())",
    "pin_guc_array": "tenant_id = any (string_to_array(current_setting('app.tenant_ids', true), ',')::uuid[])",
    "pin_never": "false",
    "pin_or_service_role": "auth.role() = 'service_role' or tenant_id = public.current_tenant_id()",
    "pin_case_service_role": "case when (auth.jwt() ->> 'role') = 'service_role' then true "
    "else tenant_id = public.current_tenant_id() end",
    "pin_basejump_default_arg": "public.has_role_on_account(tenant_id)",
    "pin_custom_claims_fn": "tenant_id::text = (select public.get_my_claim('tenant_id') #>> '{}')",
    "pin_jwt_list_contains": "((select auth.jwt()) -> 'app_metadata' -> 'tenant_ids') ? tenant_id::text",
    "pin_jwt_list_containment": "(auth.jwt() -> 'app_metadata' -> 'tenants') @> to_jsonb(tenant_id::text)",
    "pin_jwt_list_elements": "tenant_id::text in (select jsonb_array_elements_text(auth.jwt() -> 'app_metadata' -> 'tenants'))",
    "pin_role_per_tenant": "tenant_id::text = current_user",
    "pin_ctx_in_members": "(select auth.uid()) in (select ut.user_id from public.user_tenants ut "
    "where ut.tenant_id = t.tenant_id)",
    "pin_ctx_any_members": "auth.uid() = any (select ut.user_id from public.user_tenants ut where ut.tenant_id = t.tenant_id)",
}
NO_PIN = {
    "nopin_true": "true",
    "nopin_role": "auth.role() = 'authenticated'",
    "nopin_uid_notnull": "auth.uid() is not null",
    "nopin_or_public": "tenant_id = public.current_tenant_id() or is_public",
    "nopin_or_authenticated": "auth.role() = 'authenticated' or tenant_id = public.current_tenant_id()",
    "nopin_or_admin": "tenant_id = public.current_tenant_id() or public.is_admin()",
    "nopin_self": "tenant_id = tenant_id",
    "nopin_exists_uncorrelated": "exists (select 1 from public.user_tenants ut where ut.user_id = auth.uid())",
    "nopin_exists_self_corr": "exists (select 1 from public.user_tenants where tenant_id = tenant_id "
    "and user_id = auth.uid())",
    "nopin_in_all": "tenant_id in (select tenant_id from public.user_tenants)",
    "nopin_coalesce_fallback": "tenant_id = coalesce(public.current_tenant_id(), tenant_id)",
    "nopin_neq": "tenant_id <> public.current_tenant_id()",
    "nopin_ctx_notnull": "current_setting('app.current_tenant_id', true) is not null",
    "nopin_role_claim": "tenant_id = (auth.jwt() ->> 'role')::uuid",
    "nopin_owner_only": "user_id = auth.uid()",
    "nopin_not": "not (tenant_id = public.current_tenant_id())",
    "nopin_fn_ignores_arg": "public.ignores_arg(tenant_id)",
    "nopin_opaque": "tenant_id = public.opaque_tenant()",
    "nopin_parent_only": "exists (select 1 from public.projects p where p.id = t.project_id "
    "and p.tenant_id = public.current_tenant_id())",
    "nopin_array_member": "auth.uid() = any (member_ids)",
    "nopin_unset_or": "tenant_id = public.current_tenant_id() or public.current_tenant_id() is null",
    "nopin_ctx_guc_unknown": "tenant_id = public.ctx()",
    "nopin_member_wrong_column": "public.has_role_on_account(project_id)",
    "nopin_owner_or_shared": "owner_id_is(user_id) or exists (select 1 from public.user_tenants ut "
    "where ut.tenant_id = t.project_id and ut.user_id = auth.uid())",
    # unqualified tenant_id inside the subquery is user_tenants.tenant_id: the classic self-correlation bug
    "nopin_ctx_any_self_corr": "auth.uid() = any (select ut.user_id from public.user_tenants ut where ut.tenant_id = tenant_id)",
    "nopin_ctx_in_uncorrelated": "auth.uid() in (select ut.user_id from public.user_tenants ut)",
    "nopin_jwt_list_other_column": "((select auth.jwt()) -> 'app_metadata' -> 'tenant_ids') ? project_id::text",
}
# restrict the rows to the caller without pinning the tenant column: accepted for reads, not for writes
INDIRECT = {
    "nopin_owner_or_shared",
    "nopin_owner_only",
    "nopin_parent_only",
    "nopin_array_member",
    "nopin_member_wrong_column",
    "nopin_jwt_list_other_column",
}

OTHER = r'''
CREATE POLICY int_cast ON public.t_int USING (tenant_id = current_setting('app.current_tenant_id')::bigint);
CREATE POLICY int_nullif ON public.t_int USING (tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::bigint);
CREATE POLICY int_self ON public.t_int USING (tenant_id = tenant_id);
CREATE POLICY text_plain ON public.t_text USING (tenant_id = current_setting('app.current_tenant_id', true));
CREATE POLICY text_jwt ON public.t_text USING (tenant_id = (select auth.jwt() ->> 'tenant_id'));
CREATE POLICY text_other ON public.t_text USING (tenant_id = current_setting('app.locale', true));
CREATE POLICY org_claim ON public.t_org USING (org_id = (auth.jwt() ->> 'grp')::uuid);
CREATE POLICY "Ünï pin" ON "Ünï Schema"."Tëst ""Table""" USING ("Tenant Id" = current_setting('app.current_tenant_id', true)::uuid);
CREATE POLICY "Ünï self" ON "Ünï Schema"."Tëst ""Table""" USING ("Tenant Id" = "Tenant Id");
CREATE POLICY "Ünï exists" ON "Ünï Schema"."Tëst ""Table""" USING (EXISTS (SELECT 1 FROM public.user_tenants ut
    WHERE ut.tenant_id = "Tëst ""Table"""."Tenant Id" AND ut.user_id = (SELECT auth.uid())));
'''


def _policy_sql(table: str, cases: dict[str, str]) -> str:
    return "\n".join(f'CREATE POLICY "{name}" ON {table} USING ({expr});' for name, expr in cases.items())


@pytest.fixture(scope="module")
def snap(server_dsn):
    dbs = Databases(server_dsn)
    try:
        dsn = dbs.create()
        run_sql(
            dsn, SHIM + SCHEMA + _policy_sql("public.t", {**ALWAYS_TRUE, **NOT_ALWAYS_TRUE, **PINS, **NO_PIN}) + OTHER
        )
        yield introspect(dsn)
    finally:
        dbs.drop_all()


def _policy(snap, table: str, name: str):
    t = snap.table(table)
    (p,) = [p for p in t.policies if p.name == name]
    return t, p


@pytest.mark.parametrize("name", sorted(ALWAYS_TRUE))
def test_always_true_in_any_spelling(snap, name):
    t, p = _policy(snap, "public.t", name)
    an = pol.Analyzer(snap)
    assert an.analyze(p.using, table=t, tenant_column="tenant_id").always_true, p.using
    if name != "true_function":  # the function body needs the snapshot
        assert pol.always_true(p.using), p.using


@pytest.mark.parametrize("name", sorted(NOT_ALWAYS_TRUE))
def test_not_always_true(snap, name):
    t, p = _policy(snap, "public.t", name)
    assert not pol.Analyzer(snap).analyze(p.using, table=t, tenant_column="tenant_id").always_true, p.using
    assert not pol.always_true(p.using, snap)


@pytest.mark.security
@pytest.mark.parametrize("name", sorted(PINS))
def test_pins_tenant_however_the_context_is_spelled(snap, name):
    t, p = _policy(snap, "public.t", name)
    assert pol.pins_tenant(p.using, "tenant_id", TenantModel(), snap, table=t), p.using


@pytest.mark.security
@pytest.mark.parametrize("name", sorted(NO_PIN))
def test_does_not_pin_tenant(snap, name):
    t, p = _policy(snap, "public.t", name)
    assert not pol.pins_tenant(p.using, "tenant_id", TenantModel(), snap, table=t), p.using
    a = pol.Analyzer(snap).analyze(p.using, table=t, tenant_column="tenant_id")
    assert a.parsed
    assert a.restricts == (name in INDIRECT), (a.level, p.using)


def test_configured_context_function_and_guc(snap):
    t, p = _policy(snap, "public.t", "nopin_opaque")
    cfg = TenantModel(context_functions=("public.opaque_tenant",))
    assert pol.pins_tenant(p.using, "tenant_id", cfg, snap, table=t)
    assert pol.pins_tenant(p.using, "tenant_id", TenantModel(context_functions=("opaque_tenant",)), snap, table=t)
    t, p = _policy(snap, "public.t", "nopin_ctx_guc_unknown")
    assert pol.pins_tenant(p.using, "tenant_id", TenantModel(guc="app.ctx"), snap, table=t)


def test_integer_and_text_tenant_ids(snap):
    an = pol.Analyzer(snap)
    ti, tt = snap.table("public.t_int"), snap.table("public.t_text")
    levels = {p.name: an.analyze(p.using, table=ti, tenant_column="tenant_id") for p in ti.policies}
    assert levels["int_cast"].pins_tenant and levels["int_nullif"].pins_tenant
    assert levels["int_self"].always_true and not levels["int_self"].pins_tenant
    assert levels["int_cast"].unsafe_casts and not levels["int_nullif"].unsafe_casts
    levels = {p.name: an.analyze(p.using, table=tt, tenant_column="tenant_id") for p in tt.policies}
    assert levels["text_plain"].pins_tenant and levels["text_jwt"].pins_tenant
    assert not levels["text_other"].restricts


def test_jwt_tenancy_with_a_custom_claim_and_column(snap):
    t, p = _policy(snap, "public.t_org", "org_claim")
    jwt = TenantModel(context="jwt", column="org_id", jwt_claim="grp")
    assert pol.pins_tenant(p.using, "org_id", jwt, snap, table=t)
    an = pol.Analyzer(snap, Config(tenant=jwt))
    assert an.analyze(p.using, table=t, tenant_column="org_id").level == pol.TENANT
    # with the default claim name the same policy reads an unknown claim: not the tenant
    assert not pol.pins_tenant(p.using, "org_id", TenantModel(context="jwt"), snap, table=t)


@pytest.mark.security
def test_quoted_and_unicode_identifiers(snap):
    t = snap.table('Ünï Schema.Tëst "Table"')
    assert t is not None
    an = pol.Analyzer(snap, Config(tenant=TenantModel(column="Tenant Id")))
    got = {p.name: an.analyze(p.using, table=t, tenant_column="Tenant Id") for p in t.policies}
    assert got["Ünï pin"].pins_tenant
    assert got["Ünï self"].always_true and not got["Ünï self"].pins_tenant
    assert got["Ünï exists"].pins_tenant, t.policies


def test_detectors_unsafe_casts_per_row_calls_user_metadata(snap):
    an = pol.Analyzer(snap)

    def a(expr):
        return an.analyze(expr, table=snap.table("public.t"), tenant_column="tenant_id")

    assert a("tenant_id = current_setting('app.current_tenant_id', true)::uuid").unsafe_casts
    assert a("id::bigint = CAST(current_setting('app.n') AS bigint)").unsafe_casts
    assert a("(current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id') = 'x'").unsafe_casts
    via = a("tenant_id = public.unsafe_tenant()").unsafe_casts
    assert via and "public.unsafe_tenant()" in via[0]
    for safe in (
        "tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)",
        "current_setting('app.current_tenant_id', true)::text = 'x'",
        "tenant_id = public.current_tenant_id()",
    ):
        assert not a(safe).unsafe_casts, safe

    assert a("user_id = auth.uid()").per_row_calls == ("auth.uid()",)
    assert a("tenant_id = current_setting('app.current_tenant_id')::uuid").per_row_calls == ("current_setting()",)
    assert a("auth.jwt() ->> 'x' = 'y'").per_row_calls == ("auth.jwt()",)
    for once in (
        "(select auth.uid()) = user_id",
        "tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)",
        "tenant_id = (select p.tenant_id from public.profiles p where p.id = auth.uid())",
    ):
        assert a(once).per_row_calls == (), once

    assert a("tenant_id = (auth.jwt() -> 'user_metadata' ->> 'tenant_id')::uuid").user_metadata
    assert a(
        "tenant_id::text = (select u.raw_user_meta_data ->> 'tenant_id' from auth.users u where u.id = auth.uid())"
    ).user_metadata
    assert a("tenant_id = public.meta_tenant()").user_metadata
    assert not a("tenant_id = (auth.jwt() -> 'app_metadata' ->> 'tenant_id')::uuid").user_metadata


@pytest.mark.security
def test_unparsable_text_never_crashes_and_is_treated_as_not_pinning(snap):
    t, p = _policy(snap, "public.t", "pin_fn_sql")
    an = pol.Analyzer(snap)
    for text in (
        "tenant_id = (",
        "",
        "1); DROP TABLE public.t; --",
        "select 1",
        "tenant_id = $1 +",
        "a = any(select from where)",
    ):
        bad = dataclasses.replace(p, using=text)
        a = an.analyze(bad.using, table=t, tenant_column="tenant_id")
        assert not a.pins_tenant and not a.always_true, text[:40]
        assert isinstance(a.describe(), str)
        assert not pol.always_true(text) and not pol.pins_tenant(text, "tenant_id")
        assert pol.unsafe_setting_casts(text) == [] and pol.per_row_calls(text) == []
    assert "could not be parsed" in an.analyze("tenant_id = (", tenant_column="tenant_id").describe()
    # deep nesting is no reason to crash either
    assert an.analyze("(" * 3000 + "true" + ")" * 3000, tenant_column="tenant_id").always_true
    nested = an.analyze("not " * 5000 + "tenant_id = public.current_tenant_id()", table=t, tenant_column="tenant_id")
    assert not nested.pins_tenant
