"""The parts of the policy package one by one: parsing, printing, folding, scopes and frames, detectors.
None of them needs a database (the snapshot-bound parts are in test_policy_context.py)."""
from __future__ import annotations

import pytest
from pglast import ast

from dbguard_pipeline import policy as pol
from dbguard_pipeline.model.schema import Function
from dbguard_pipeline.policy.detectors import PerRowCalls, UnsafeSettingCasts, UserMetadata
from dbguard_pipeline.policy.fold import NULL, UNKNOWN, cast_value, compare
from dbguard_pipeline.policy.parse import PolicyParseError, Visitor, parse_expression, walk
from dbguard_pipeline.policy.printer import snippet
from dbguard_pipeline.policy.scope import MAX_INLINED, Frame, Pass, Scope, resolve
from dbguard_pipeline.semantics.roles import SUPABASE_BYPASS_JWT_ROLES


def fold(text: str, state: Pass | None = None):
    return pol.Analyzer().walker(state).fold(parse_expression(text))


# --------------------------------------------------------------------------- parse
@pytest.mark.parametrize("text", ["", "   ", "tenant_id = (", "1); DROP TABLE t; --",
                                  "true) GROUP BY (1", "true) UNION SELECT 1 WHERE (true", "true) LIMIT (1"])
def test_parse_expression_accepts_one_expression_only(text):
    with pytest.raises(PolicyParseError):
        parse_expression(text)


def test_parse_expression_returns_typed_nodes_and_walk_visits_every_node():
    node = parse_expression("a = 1 and b in (select x from t)")
    assert isinstance(node, ast.BoolExpr)
    kinds = [type(n).__name__ for n in walk(node)]
    assert kinds[0] == "BoolExpr" and {"A_Expr", "SubLink", "SelectStmt", "RangeVar", "ColumnRef"} <= set(kinds)
    # depth first, later siblings first: the IN (second argument) before a = 1
    assert kinds.index("SubLink") < kinds.index("A_Expr")


def test_visitor_dispatches_on_the_node_class():
    class Columns(Visitor):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def visit_ColumnRef(self, node: ast.ColumnRef) -> None:
            self.seen.append(node.fields[-1].sval)

    v = Columns()
    v(parse_expression("a = 1 or (b = c and f(d))"))
    assert sorted(v.seen) == ["a", "b", "c", "d"]


# --------------------------------------------------------------------------- printer (finding messages)
@pytest.mark.parametrize("text, printed", [
    ("current_setting('app.current_tenant_id', true)::uuid", "current_setting('app.current_tenant_id', true)::uuid"),
    ("nullif(current_setting('a'), '')::pg_catalog.int8", "nullif(current_setting('a'), '')::int8"),
    ("(select auth.uid())", "(SELECT auth.uid())"),
    ("x in (select 1 from t)", "x IN (SELECT ...)"),
    ("exists (select 1 from t)", "EXISTS (SELECT ...)"),
    ('"Tenant Id" = 1 and not b', '(("Tenant Id" = 1) AND NOT b)'),
    ("a in (1, 'x') or a is not null", "(a IN (1, 'x') OR a IS NOT NULL)"),
    ("coalesce(a, ARRAY[1, 2]) = any (b)", "coalesce(a, ARRAY[1, 2]) = ANY (b)"),
    ("current_user = $1", "(current_user = $1)"),
    ("t.* is null", "t.* IS NULL"),
    ("count(*) > 1.5", "(count(*) > 1.5)"),
])
def test_snippet_prints_what_messages_always_showed(text, printed):
    assert snippet(parse_expression(text)) == printed


def test_snippet_is_cut_at_the_limit():
    text = snippet(parse_expression("f(" + ", ".join(f"'{i:03d}'" for i in range(100)) + ")"), 40)
    assert len(text) == 40 and text.endswith("...")


# --------------------------------------------------------------------------- fold
@pytest.mark.parametrize("text, value", [
    ("'t'::boolean", True), ("1 = 1", True), ("1 <> 1", False), ("null", NULL), ("nullif(1, 1)", NULL),
    ("coalesce(null, 2)", 2), ("case when false then 1 else 2 end", 2), ("case 1 when 1 then 'a' end", "a"),
    ("'5' = 5", True), ("1 in (2, null)", NULL), ("1 not in (2, 3)", True), ("x = x", True), ("x < x", False),
    ("x is not distinct from x", True), ("random() = random()", UNKNOWN), ("exists (select 1)", True),
    ("(select 1 where false)", NULL), ("-1 < 0", True), ("true is not false", True), ("1 = any (array[2, 1])", True),
    ("not null", NULL), ("true and null", NULL), ("false and x", False), ("x or true", True), ("x", UNKNOWN),
    ("interval '1 day' = interval '24 hours'", UNKNOWN), ("1.5 = 1.5", True), ("'1'::int = 1", True),
])
def test_fold(text, value):
    assert fold(text) == value if not isinstance(value, bool) else fold(text) is value


def test_fold_compares_a_column_qualified_with_the_policys_own_table():
    assert fold("t.tenant_id = tenant_id") is UNKNOWN
    state = Pass(top_names=frozenset({"t"}))
    assert fold("t.tenant_id = tenant_id", state) is True
    assert state.used_table  # the answer depended on the table: results are then not shared between tables


def test_compare_and_cast_follow_postgresql():
    assert compare("=", True, 1) is UNKNOWN  # boolean = integer does not type-check
    assert compare("<", "a", "b") is True and compare("~~", "a", "a") is UNKNOWN
    assert compare("=", NULL, 1) is NULL and compare("=", UNKNOWN, NULL) is UNKNOWN
    assert cast_value("yes", "boolean") is True and cast_value("maybe", "bool") is UNKNOWN
    assert cast_value(2.6, "int") == 3 and cast_value(True, "text") == "true"
    assert cast_value("x", "uuid") is UNKNOWN


# --------------------------------------------------------------------------- scopes and frames
def test_resolve_finds_the_innermost_scope_with_the_column():
    top = Scope(frozenset({"t"}), frozenset({"tenant_id", "id"}))
    sub = Scope(frozenset({"ut"}), frozenset({"tenant_id", "user_id"}))
    frame, state = Frame((top, sub)), Pass()
    assert resolve(["tenant_id"], frame, state) == 1  # the classic self-correlation: the subquery's column
    assert resolve(["t", "tenant_id"], frame, state) == 0 and resolve(["ut", "user_id"], frame, state) == 1
    assert resolve(["id"], frame, state) == 0 and state.used_table
    assert resolve(["nobody", "x"], frame, state) == 0  # an unknown qualifier is the policy's own table


def _fn(name: str, definer: bool = False) -> Function:
    return Function(schema="public", name=name, arguments="", returns="boolean", language="sql",
                    security_definer=definer, volatility="stable", body="select true")


def test_frame_refuses_recursion_and_deep_inlining():
    frame = Frame((Scope(frozenset(), None),))
    inside = frame.inline(_fn("a"))
    assert inside is not None and inside.inline(_fn("a")) is None and not inside.definer
    assert inside.inline(_fn("b", definer=True)).definer
    for i in range(MAX_INLINED):
        frame = frame.inline(_fn(f"f{i}"))
    assert frame.inline(_fn("one_more")) is None
    assert frame.deeper().depth == frame.depth + 1 and frame.deeper().inlining == frame.inlining


# --------------------------------------------------------------------------- detectors
def test_detectors_report_in_source_order():
    node = parse_expression("user_id = auth.uid() and tenant_id = current_setting('app.t')::uuid "
                            "and (select auth.jwt()) is not null and org = current_setting('app.o')::int")
    calls = PerRowCalls()
    calls(node)
    assert calls.found == ["auth.uid()", "current_setting()"]
    assert UnsafeSettingCasts.in_tree(node) == ["current_setting('app.o')::int4", "current_setting('app.t')::uuid"]
    assert UserMetadata.in_tree(parse_expression("(auth.jwt() -> 'user_metadata' ->> 'x') = 'y'")) == [
        "auth.jwt() -> 'user_metadata'"]


def test_deep_nesting_is_analysed_without_crashing():
    pin = "tenant_id = current_setting('app.current_tenant_id')::uuid"
    an = pol.Analyzer()
    assert an.analyze("not " * 400 + pin, tenant_column="tenant_id").pins_tenant  # NOT NOT x is x
    assert not an.analyze("not " * 401 + pin, tenant_column="tenant_id").restricts
    assert an.analyze("(" * 3000 + "true" + ")" * 3000, tenant_column="tenant_id").always_true


def test_supabase_jwt_bypass_roles_need_no_snapshot():
    assert SUPABASE_BYPASS_JWT_ROLES == ("service_role", "supabase_admin")
    for role in SUPABASE_BYPASS_JWT_ROLES:
        assert pol.pins_tenant(f"auth.role() = '{role}' or tenant_id = current_setting('app.current_tenant_id')::uuid",
                               "tenant_id")
    assert not pol.pins_tenant("auth.role() = 'authenticated' or tenant_id = "
                               "current_setting('app.current_tenant_id')::uuid", "tenant_id")


def test_analyzer_for_builds_the_object_callers_hold():
    a, b = pol.analyzer_for(None, None), pol.analyzer_for(None, None)  # type: ignore[arg-type]
    assert isinstance(a, pol.Analyzer) and a is not b  # no module-level cache
    assert a.analyze("true", tenant_column="tenant_id") is a.analyze("true", tenant_column="tenant_id")
