"""Equivalent spellings of a policy get the same judgment (issue #10 item 5), and spellings that only look
alike keep their own. Every spelling is created as a policy in a real PostgreSQL and read back the way the
audit reads it (pg_get_expr through catalog.introspect), so what is analysed is PostgreSQL's own printing
(``x IN (v)`` comes back as ``x = v``, ``(select auth.role())`` as ``( SELECT auth.role() AS role)``, ...).

A verdict is (always true, never true, level): ``tenant`` pins the tenant, ``indirect`` restricts rows to the
caller some other way, ``none`` restricts nothing (see policy/restriction.py)."""
from __future__ import annotations

import pytest

from dbguard_pipeline import policy as pol
from dbguard_pipeline.pg.catalog import introspect

from .conftest import Databases, run_sql
from .test_policy import SCHEMA, SHIM

PIN = "tenant_id = public.current_tenant_id()"

# family -> (canonical spelling, equivalent spellings)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "service_role_escape_hatch": (f"{PIN} or auth.role() = 'service_role'", (
        f"{PIN} or (select auth.role()) = 'service_role'",
        f"{PIN} or (select auth.role())::text = 'service_role'",
        f"{PIN} or 'service_role' = (select auth.role())",
        f"{PIN} or (select auth.role()) in ('service_role')",
        f"{PIN} or (select auth.role()) = any (array['service_role'])",
        f"{PIN} or (select auth.role()) in ('service_role', 'supabase_admin')",
        f"{PIN} or (select auth.jwt() ->> 'role') = 'service_role'",
        f"{PIN} or ((select auth.jwt()) ->> 'role') = 'service_role'",
        f"{PIN} or (select current_setting('request.jwt.claims', true)::jsonb ->> 'role') = 'service_role'",
        f"{PIN} or current_setting('request.jwt.claim.role', true) = 'service_role'",
        f"{PIN} or (select current_setting('request.jwt.claim.role', true)) = 'service_role'",
        f"{PIN} or (select current_user) = 'service_role'",
        f"{PIN} or (select auth.role() = 'service_role')",
        f"{PIN} or (auth.role() = 'service_role') is true",
        f"{PIN}",
    )),
    "boolean_helper": ("public.is_member(tenant_id)", (
        "public.is_member(tenant_id) = true",
        "true = public.is_member(tenant_id)",
        "public.is_member(tenant_id) = 'true'",
        "public.is_member(tenant_id) <> false",
        "public.is_member(tenant_id) is true",
        "public.is_member(tenant_id) is not distinct from true",
        "not (public.is_member(tenant_id) is not true)",
        "coalesce(public.is_member(tenant_id), false)",
        "coalesce(public.is_member(tenant_id), null)",
        "not not public.is_member(tenant_id)",
        "(select public.is_member(tenant_id))",
        "(select public.is_member(tenant_id)) = true",
        "(select public.is_member(tenant_id) = true)",
        "(select public.is_member_plpgsql(tenant_id)) is true",
        "case when public.is_member(tenant_id) then true else false end",
    )),
    "boolean_comparison": (PIN, (
        f"({PIN}) = true",
        f"({PIN}) is true",
        f"coalesce({PIN}, false)",
        f"not not ({PIN})",
        f"not ({PIN}) = false",
        f"({PIN} and true) = true",
    )),
    "guc_casts_and_forms": ("tenant_id = current_setting('app.current_tenant_id')::uuid", (
        "tenant_id = current_setting('app.current_tenant_id', true)::uuid",
        "tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid",
        "tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)",
        "tenant_id::text = current_setting('app.current_tenant_id')",
        "tenant_id::text = current_setting('app.current_tenant_id', true)",
        "tenant_id::text = nullif(current_setting('app.current_tenant_id', true), '')",
        "tenant_id::uuid = current_setting('app.current_tenant_id')::uuid",
        "current_setting('app.current_tenant_id')::uuid = tenant_id::uuid",
        "tenant_id = (select current_setting('app.current_tenant_id')::uuid)",
        "tenant_id = (select current_setting('app.current_tenant_id'))::uuid",
        "tenant_id::text = (select current_setting('app.current_tenant_id', true))",
        "tenant_id in (current_setting('app.current_tenant_id')::uuid)",
        "tenant_id = any (array[current_setting('app.current_tenant_id')::uuid])",
        "tenant_id = any (array[(select current_setting('app.current_tenant_id')::uuid)])",
        "tenant_id in ((select nullif(current_setting('app.current_tenant_id', true), '')::uuid))",
    )),
    "jwt_paths": ("tenant_id = (auth.jwt() ->> 'tenant_id')::uuid", (
        "tenant_id = (auth.jwt() #>> '{tenant_id}')::uuid",
        "tenant_id::text = auth.jwt() ->> 'tenant_id'",
        "tenant_id::text = auth.jwt() #>> '{tenant_id}'",
        "tenant_id::text = auth.jwt() #>> array['tenant_id']",
        "tenant_id = ((select auth.jwt()) ->> 'tenant_id')::uuid",
        "tenant_id = (select (auth.jwt() ->> 'tenant_id')::uuid)",
        "tenant_id = (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid",
    )),
    "jwt_nested_paths": ("tenant_id = ((auth.jwt() -> 'app_metadata') ->> 'org')::uuid", (
        "tenant_id = (auth.jwt() #>> '{app_metadata,org}')::uuid",
        "tenant_id = ((auth.jwt() #> '{app_metadata}') ->> 'org')::uuid",
        "tenant_id = ((auth.jwt() #> array['app_metadata']) ->> 'org')::uuid",
        "tenant_id = ((select auth.jwt()) #>> '{app_metadata,org}')::uuid",
        "tenant_id = (select auth.jwt() #>> '{app_metadata,org}')::uuid",
        "tenant_id::text = (select auth.jwt() -> 'app_metadata' ->> 'org')",
    )),
    "identity": ("user_id = auth.uid()", (
        "user_id = (select auth.uid())",
        "user_id in (auth.uid())",
        "user_id in ((select auth.uid()))",
        "user_id = any (array[auth.uid()])",
        "(user_id = (select auth.uid())) is true",
        "(user_id = auth.uid()) = true",
        "user_id::text = (select auth.uid())::text",
    )),
    "always_true": ("true", (
        "(select true)",
        "true = true",
        "(1 = 1) is true",
        "not not true",
        "coalesce(true, false)",
        "(id in (id, id)) = (id in (id, id))",
        "(tenant_id in (user_id, project_id)) = (tenant_id in (user_id, project_id))",
    )),
}

# spellings that look like their family's canonical one and are NOT equivalent: they keep their own verdict
NOT_EQUIVALENT: dict[str, tuple[str, str]] = {
    # NULL -> true: a session without tenant context (NULL comparison) sees every row
    f"({PIN}) is not false": ("boolean_comparison", "none"),
    f"coalesce({PIN}, true)": ("boolean_comparison", "none"),
    f"({PIN}) is distinct from false": ("boolean_comparison", "none"),
    f"not ({PIN})": ("boolean_comparison", "none"),
    f"({PIN}) = false": ("boolean_comparison", "none"),
    f"({PIN}) is not true": ("boolean_comparison", "none"),
    "public.is_member(tenant_id) is not false": ("boolean_helper", "none"),
    "coalesce(public.is_member(tenant_id), true)": ("boolean_helper", "none"),
    "coalesce(public.is_member(tenant_id), is_public)": ("boolean_helper", "none"),
    "public.is_member(tenant_id) = false": ("boolean_helper", "none"),
    "public.is_member(tenant_id) is false": ("boolean_helper", "none"),
    "not (public.is_member(tenant_id) is true)": ("boolean_helper", "none"),
    "public.is_member(tenant_id) <> true": ("boolean_helper", "none"),
    "public.is_member(project_id) = true": ("boolean_helper", "indirect"),
    "(select public.is_member(project_id))": ("boolean_helper", "indirect"),
    # a literal or another setting is no tenant context, however it is cast
    "tenant_id::text = 'literal'": ("guc_casts_and_forms", "none"),
    "tenant_id::text = current_setting('app.locale', true)": ("guc_casts_and_forms", "none"),
    "tenant_id::text = (select current_setting('app.locale'))": ("guc_casts_and_forms", "none"),
    "tenant_id in (current_setting('app.current_tenant_id')::uuid, project_id)": ("guc_casts_and_forms", "none"),
    "tenant_id = any (array[current_setting('app.current_tenant_id')::uuid, project_id])": (
        "guc_casts_and_forms", "none"),
    # another claim
    "tenant_id = (auth.jwt() #>> '{role}')::uuid": ("jwt_paths", "none"),
    "tenant_id = (auth.jwt() #>> '{app_metadata,role}')::uuid": ("jwt_nested_paths", "none"),
    "tenant_id::text = (select auth.jwt() -> 'user_metadata' ->> 'locale')": ("jwt_nested_paths", "none"),
    # a role that does not bypass row level security is no escape hatch
    f"{PIN} or (select auth.role()) = 'authenticated'": ("service_role_escape_hatch", "none"),
    f"{PIN} or (select auth.role()) in ('service_role', 'authenticated')": ("service_role_escape_hatch", "none"),
    f"{PIN} or (select auth.jwt() ->> 'aud') = 'service_role'": ("service_role_escape_hatch", "none"),
    f"{PIN} or (select current_setting('app.role', true)) = 'service_role'": ("service_role_escape_hatch", "none"),
    f"{PIN} or (select auth.role()) is not null": ("service_role_escape_hatch", "none"),
    # identity
    "user_id = coalesce(auth.uid(), user_id)": ("identity", "none"),
    "(user_id = auth.uid()) is not false": ("identity", "none"),
    # not always true
    "(select is_public)": ("always_true", "none"),
    "coalesce(is_public, true)": ("always_true", "none"),
    "(tenant_id in (user_id, project_id)) = (tenant_id in (user_id, id))": ("always_true", "none"),
}

SPELLINGS = sorted({s for canonical, same in FAMILIES.values() for s in (canonical, *same)} | set(NOT_EQUIVALENT))
NAMES = {s: f"s{i:03d}" for i, s in enumerate(SPELLINGS)}


@pytest.fixture(scope="module")
def verdicts(server_dsn) -> dict[str, tuple[tuple[bool, bool, str], str]]:
    """spelling -> (verdict, the text PostgreSQL printed for it)."""
    dbs = Databases(server_dsn)
    try:
        dsn = dbs.create()
        run_sql(dsn, SHIM + SCHEMA + "\n".join(
            f'CREATE POLICY "{NAMES[s]}" ON public.t USING ({s});' for s in SPELLINGS))
        snap = introspect(dsn)
    finally:
        dbs.drop_all()
    table = snap.table("public.t")
    an = pol.Analyzer(snap)
    by_name = {p.name: p for p in table.policies}
    out = {}
    for s in SPELLINGS:
        printed = by_name[NAMES[s]].using
        a = an.analyze(printed, table=table, tenant_column="tenant_id")
        assert a.parsed, (s, printed)
        out[s] = ((a.always_true, a.always_false, a.level.value), printed)
    return out


EQUIVALENT_CASES = [(f, s) for f, (_, same) in FAMILIES.items() for s in same]


@pytest.mark.security
@pytest.mark.parametrize(("family", "spelling"), EQUIVALENT_CASES, ids=[f"{f}:{s}" for f, s in EQUIVALENT_CASES])
def test_equivalent_spelling_gets_the_canonical_verdict(verdicts, family, spelling):
    canonical = FAMILIES[family][0]
    (want, _), (got, printed) = verdicts[canonical], verdicts[spelling]
    assert got == want, f"{spelling!r} (printed {printed!r}) judged {got}, {canonical!r} judged {want}"


def test_canonical_verdicts(verdicts):
    """The canonical spellings themselves: what each family is judged."""
    got = {f: verdicts[c][0] for f, (c, _) in FAMILIES.items()}
    assert got == {
        "service_role_escape_hatch": (False, False, "tenant"), "boolean_helper": (False, False, "tenant"),
        "boolean_comparison": (False, False, "tenant"), "guc_casts_and_forms": (False, False, "tenant"),
        "jwt_paths": (False, False, "tenant"), "jwt_nested_paths": (False, False, "tenant"),
        "identity": (False, False, "indirect"), "always_true": (True, False, "none")}


@pytest.mark.security
@pytest.mark.parametrize("spelling", sorted(NOT_EQUIVALENT))
def test_lookalike_spelling_keeps_its_own_verdict(verdicts, spelling):
    family, level = NOT_EQUIVALENT[spelling]
    canonical = FAMILIES[family][0]
    (got, printed), (want_not, _) = verdicts[spelling], verdicts[canonical]
    assert got == (False, False, level), (spelling, printed)
    assert got != want_not, (spelling, printed)


# --------------------------------------------------------------------------- function bodies (not type checked)
FUNCTIONS = r'''
CREATE FUNCTION public.self_equal_in() RETURNS boolean LANGUAGE sql STABLE
  AS $$ SELECT (current_user in ('a','b')) = (current_user in ('a', 'b')) $$;
CREATE FUNCTION public.not_self_equal_in() RETURNS boolean LANGUAGE sql STABLE
  AS $$ SELECT (current_user in ('a','b')) = (current_user in ('a', 'c')) $$;
-- PL/pgSQL: the first parameter (datum 0) overwritten before it is returned
CREATE FUNCTION public.tenant_param(p uuid) RETURNS uuid LANGUAGE plpgsql STABLE
  AS $$ BEGIN p := nullif(current_setting('app.current_tenant_id', true), '')::uuid; RETURN p; END $$;
-- ... only when it is NULL: the argument otherwise
CREATE FUNCTION public.tenant_param_or(p uuid) RETURNS uuid LANGUAGE plpgsql STABLE
  AS $$ BEGIN IF p IS NULL THEN p := nullif(current_setting('app.current_tenant_id', true), '')::uuid; END IF;
        RETURN p; END $$;
CREATE FUNCTION public.tenant_var() RETURNS uuid LANGUAGE plpgsql STABLE
  AS $$ DECLARE v uuid; BEGIN v = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid); RETURN v; END $$;
-- looks like a membership check of its argument, but overwrites it: whether the caller belongs to the
-- tenant of the session, whatever the row
CREATE FUNCTION public.member_ignores_arg(p uuid) RETURNS boolean LANGUAGE plpgsql STABLE
  AS $$ BEGIN p := nullif(current_setting('app.current_tenant_id', true), '')::uuid;
        RETURN EXISTS (SELECT 1 FROM public.user_tenants ut WHERE ut.tenant_id = p AND ut.user_id = (select auth.uid()));
  END $$;
CREATE FUNCTION public.member_plpgsql_eq_true(p uuid) RETURNS boolean LANGUAGE plpgsql STABLE
  AS $$ BEGIN
        RETURN (EXISTS (SELECT 1 FROM public.user_tenants ut WHERE ut.tenant_id = p AND ut.user_id = (select auth.uid()))) = true;
  END $$;
CREATE FUNCTION public.member_helper_eq_true(t uuid) RETURNS boolean LANGUAGE sql STABLE
  AS $$ SELECT (select public.is_member(t)) = true $$;
CREATE FUNCTION public.member_helper_not_false(t uuid) RETURNS boolean LANGUAGE sql STABLE
  AS $$ SELECT public.is_member(t) IS NOT FALSE $$;
'''
BODY_CASES = {
    "public.self_equal_in()": (True, False, "none"),
    "public.not_self_equal_in()": (False, False, "none"),
    "tenant_id = public.tenant_param(project_id)": (False, False, "tenant"),
    "tenant_id = public.tenant_param_or(project_id)": (False, False, "none"),
    "tenant_id = public.tenant_var()": (False, False, "tenant"),
    "public.member_ignores_arg(tenant_id)": (False, False, "none"),
    "public.member_plpgsql_eq_true(tenant_id)": (False, False, "tenant"),
    "public.member_plpgsql_eq_true(project_id)": (False, False, "indirect"),
    "public.member_helper_eq_true(tenant_id)": (False, False, "tenant"),
    "public.member_helper_not_false(tenant_id)": (False, False, "none"),
}


@pytest.fixture(scope="module")
def body_verdicts(server_dsn) -> dict[str, tuple[bool, bool, str]]:
    dbs = Databases(server_dsn)
    try:
        dsn = dbs.create()
        run_sql(dsn, SHIM + SCHEMA + FUNCTIONS)
        snap = introspect(dsn)
    finally:
        dbs.drop_all()
    table, an = snap.table("public.t"), pol.Analyzer(snap)
    out = {}
    for text in BODY_CASES:
        a = an.analyze(text, table=table, tenant_column="tenant_id")
        out[text] = (a.always_true, a.always_false, a.level.value)
    return out


@pytest.mark.security
@pytest.mark.parametrize("text", sorted(BODY_CASES))
def test_spellings_inside_function_bodies(body_verdicts, text):
    assert body_verdicts[text] == BODY_CASES[text], text


def test_in_lists_compare_without_their_positions():
    assert pol.always_true("(a in (1,2)) = (a in (1, 2))")
    assert pol.always_true("(a not in ( 1 ,2)) = (a not in (1,  2))")
    assert not pol.always_true("(a in (1,2)) = (a in (1, 3))")


def test_json_keys_are_strings_or_indexes_never_booleans():
    from dbguard_pipeline.policy.parse import parse_expression
    from dbguard_pipeline.policy.scope import Frame

    reader = pol.Analyzer().walker()
    frame = Frame(())
    assert reader.json_path(parse_expression("auth.jwt() -> true ->> 'tenant_id'"), frame) == (True, ["?", "tenant_id"])
    assert reader.json_path(parse_expression("auth.jwt() -> 0 ->> 'tenant_id'"), frame) == (True, ["0", "tenant_id"])
    assert reader.json_path(parse_expression("auth.jwt() -> (select 'app_metadata') ->> 'org'"), frame) == (
        True, ["app_metadata", "org"])
