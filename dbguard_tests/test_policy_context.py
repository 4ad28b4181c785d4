"""ContextKind: which values tell who the caller is or which tenant the caller acts for, however they are
spelled (settings, JWT claims, Supabase helpers, functions, membership lookups), on a snapshot of a real
database with the helper functions of test_policy.py."""

from __future__ import annotations

import pytest

from dbguard_pipeline import policy as pol
from dbguard_pipeline.config import TenantModel
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.policy import ContextKind
from dbguard_pipeline.policy.context import TenantContext, combine
from dbguard_pipeline.policy.parse import parse_expression
from dbguard_pipeline.policy.scope import Frame, top_scope

from .conftest import Databases, run_sql
from .test_policy import SCHEMA, SHIM

TENANT, IDENTITY, ROW = ContextKind.TENANT, ContextKind.IDENTITY, ContextKind.ROW

KINDS = {
    # settings
    "current_setting('app.current_tenant_id', true)": TENANT,
    "nullif(current_setting('app.current_tenant_id', true), '')::uuid": TENANT,
    "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)": TENANT,
    "pg_catalog.current_setting('app.org_id')": TENANT,
    "current_setting('app.user_id')": IDENTITY,
    "current_setting('request.jwt.claim.sub', true)": IDENTITY,
    "current_setting('request.jwt.claim.tenant_id', true)": TENANT,
    "current_setting('search_path')": None,
    "current_setting('app.locale', true)": None,
    # JWT claims
    "auth.jwt() ->> 'tenant_id'": TENANT,
    "(select auth.jwt()) -> 'app_metadata' ->> 'org_id'": TENANT,
    "auth.jwt() #>> '{app_metadata,tenant_id}'": TENANT,
    "auth.jwt() -> 'app_metadata' -> 'tenants'": TENANT,
    "(current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')": TENANT,
    "auth.jwt() ->> 'sub'": IDENTITY,
    "auth.jwt() ->> 'role'": None,
    "auth.jwt() ->> 'locale'": None,
    # Supabase helpers and SQL value functions
    "auth.uid()": IDENTITY,
    "(select auth.uid())": IDENTITY,
    "auth.email()": IDENTITY,
    "auth.role()": None,
    "current_user": IDENTITY,
    "session_user": IDENTITY,
    "current_date": None,
    # functions whose body returns the context
    "public.current_tenant_id()": TENANT,
    "public.jwt_tenant()": TENANT,
    "public.my_tenant()": TENANT,
    "public.get_my_claim('tenant_id')": TENANT,
    "public.opaque_tenant()": None,
    "public.ctx()": None,
    # membership lookups keyed by the caller
    "(select tenant_id from public.user_tenants where user_id = auth.uid())": TENANT,
    "array(select ut.tenant_id from public.user_tenants ut where ut.user_id = (select auth.uid()))": TENANT,
    "(select p.tenant_id from public.profiles p where p.id = auth.uid())": TENANT,
    "(select public.my_tenants())": TENANT,
    "(select tenant_id from public.user_tenants)": None,
    # values of the row
    "tenant_id": ROW,
    "$1": ROW,
    "coalesce(public.current_tenant_id(), tenant_id)": ROW,
    "'00000000-0000-0000-0000-000000000000'::uuid": None,
}


@pytest.fixture(scope="module")
def snap(server_dsn):
    dbs = Databases(server_dsn)
    try:
        dsn = dbs.create()
        run_sql(dsn, SHIM + SCHEMA)
        yield introspect(dsn)
    finally:
        dbs.drop_all()


def kind(snap, text: str, tenant: TenantModel | None = None):
    an = pol.Analyzer(snap, tenant=tenant)
    return an.walker().kind(parse_expression(text), Frame((top_scope(snap.table("public.t")),)))


@pytest.mark.parametrize("text", sorted(KINDS))
def test_context_kind_of_each_spelling(snap, text):
    assert kind(snap, text) is KINDS[text], text


def test_configured_context_function_setting_and_claim(snap):
    assert kind(snap, "public.opaque_tenant()", TenantModel(context_functions=("public.opaque_tenant",))) is TENANT
    assert kind(snap, "opaque_tenant()", TenantModel(context_functions=("opaque_tenant",))) is TENANT
    assert kind(snap, "public.ctx()", TenantModel(guc="app.ctx")) is TENANT
    assert kind(snap, "auth.jwt() ->> 'grp'", TenantModel(jwt_claim="grp")) is TENANT


@pytest.mark.parametrize(
    "text, expected",
    [
        ("auth.jwt() -> 'app_metadata' ->> 'brewery'", TENANT),  # the configured nested claim at its real path
        ("(select auth.jwt()) #>> '{app_metadata,brewery}'", TENANT),
        ("(current_setting('request.jwt.claims', true)::jsonb -> 'app_metadata' ->> 'brewery')", TENANT),
        ("auth.jwt() ->> 'app_metadata.brewery'", None),  # a flat key with a dot is another claim (repro r8)
        ("auth.jwt() -> 'user_metadata' ->> 'brewery'", None),  # the same last key under another parent
    ],
)
def test_a_nested_claim_is_read_as_a_json_path(snap, text, expected):
    assert kind(snap, text, TenantModel(context="jwt", jwt_claim="app_metadata.brewery")) is expected


def test_tenant_context_classifies_names_without_a_database():
    ctx = TenantContext.of(TenantModel(column="org_id", guc="app.org"))
    assert ctx.setting_kind(" APP.ORG ") is TENANT and ctx.setting_kind("app.customer") is TENANT
    assert ctx.setting_kind("request.jwt.claims") is None and ctx.setting_kind("work_mem") is None
    assert ctx.claim_kind("org_id") is TENANT and ctx.claim_kind("my_org_ids") is TENANT
    assert ctx.claim_kind("email") is IDENTITY and ctx.claim_kind("aud") is None
    assert ctx.is_context_function(None, "x") is False


def test_combine_a_row_value_spoils_the_context():
    assert combine(None, IDENTITY) is IDENTITY and combine(IDENTITY, TENANT) is TENANT
    assert combine(TENANT, ROW) is ROW and combine(None, None) is None
