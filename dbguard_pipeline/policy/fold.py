"""Constant folding: the value an expression has whatever the row (``1 = 1``, ``'t'::boolean``, ``(select true)``,
``tenant_id = tenant_id``, ``coalesce(true, ...)``, CASE with constant branches, a function returning a constant).

Values are Python ``bool``/``int``/``float``/``str``, :data:`NULL`, or :data:`UNKNOWN` (depends on the row or
on the session). One :class:`Folder` serves one analysis: it memoizes per node.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Callable
from operator import eq, ge, gt, le, lt, ne
from typing import Any, Optional, Union

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, BoolTestType, NullTestType, SubLinkType

from dbguard_pipeline.policy.inline import AUTH_FUNCS, Functions
from dbguard_pipeline.policy.parse import (
    Node,
    func_name,
    is_plain,
    names,
    operator,
    strip_casts,
    target_values,
    type_name,
    walk,
)
from dbguard_pipeline.policy.scope import Pass


class Special(enum.Enum):
    NULL = "NULL"
    UNKNOWN = "UNKNOWN"


NULL = Special.NULL
UNKNOWN = Special.UNKNOWN
Value = Union[bool, int, float, str, Special]

TEXT_TYPES = frozenset({"text", "varchar", "character varying", "bpchar", "char", "character", "name", "citext",
                        "unknown"})
_VOLATILE = frozenset({"random", "gen_random_uuid", "uuid_generate_v4", "clock_timestamp", "nextval", "timeofday"})
_BOOL_TESTS = {
    BoolTestType.IS_TRUE: lambda v: v is True, BoolTestType.IS_NOT_TRUE: lambda v: v is not True,
    BoolTestType.IS_FALSE: lambda v: v is False, BoolTestType.IS_NOT_FALSE: lambda v: v is not False,
    BoolTestType.IS_UNKNOWN: lambda v: v is NULL, BoolTestType.IS_NOT_UNKNOWN: lambda v: v is not NULL,
}


class Folder:
    """Folds the expressions of one analysis (``state`` says which table is the policy's own)."""

    def __init__(self, functions: Functions, state: Pass):
        self.functions = functions
        self.state = state
        self._memo: dict[int, tuple[Any, Value]] = {}

    def fold(self, node: Optional[Node], depth: int = 0) -> Value:
        """The constant value of an expression: True/False/int/float/str/NULL, or UNKNOWN."""
        if depth > 60:
            return UNKNOWN
        hit = self._memo.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        value = self._fold(node, depth + 1)
        self._memo[id(node)] = (node, value)  # the node is kept alive, so its id stays unique
        return value

    def _fold(self, node: Optional[Node], d: int) -> Value:
        if isinstance(node, ast.A_Const):
            return _const(node)
        if isinstance(node, ast.TypeCast):
            return cast_value(self.fold(node.arg, d), type_name(node))
        if isinstance(node, ast.BoolExpr):
            return self._fold_bool(node, d)
        if isinstance(node, ast.A_Expr):
            return self._fold_a_expr(node, d)
        if isinstance(node, ast.NullTest):
            v = self.fold(node.arg, d)
            if v is UNKNOWN:
                return UNKNOWN
            return (v is NULL) if node.nulltesttype == NullTestType.IS_NULL else (v is not NULL)
        if isinstance(node, ast.BooleanTest):
            v = self.fold(node.arg, d)
            test = _BOOL_TESTS.get(node.booltesttype) if node.booltesttype is not None else None
            if v is UNKNOWN or not (isinstance(v, bool) or v is NULL) or test is None:
                return UNKNOWN
            return test(v)
        if isinstance(node, ast.CoalesceExpr):
            for a in node.args or ():
                v = self.fold(a, d)
                if v is not NULL:
                    return v
            return NULL
        if isinstance(node, ast.SubLink):
            return self._fold_sublink(node, d)
        if isinstance(node, ast.CaseExpr):
            return self._fold_case(node, d)
        if isinstance(node, ast.FuncCall):
            return self._fold_call(node, d)
        return UNKNOWN

    def _fold_bool(self, node: ast.BoolExpr, d: int) -> Value:
        vals = [self.fold(a, d) for a in node.args or ()]
        op = node.boolop
        if op == BoolExprType.NOT_EXPR:
            v = vals[0] if vals else UNKNOWN
            return (not v) if isinstance(v, bool) else v
        if op == BoolExprType.AND_EXPR:
            return _junction(vals, absorbing=False)
        if op == BoolExprType.OR_EXPR:
            return _junction(vals, absorbing=True)
        return UNKNOWN

    def _fold_sublink(self, node: ast.SubLink, d: int) -> Value:
        sel = node.subselect
        if not (isinstance(sel, ast.SelectStmt) and not sel.fromClause and not sel.groupClause
                and not sel.havingClause and is_plain(sel) and not sel.limitCount and len(sel.targetList or ()) == 1):
            return UNKNOWN
        where = self.fold(sel.whereClause, d) if sel.whereClause is not None else True
        if node.subLinkType == SubLinkType.EXISTS_SUBLINK:
            return True if where is True else (False if where is False or where is NULL else UNKNOWN)
        if node.subLinkType == SubLinkType.EXPR_SUBLINK:
            if where is True:
                return self.fold(target_values(sel)[0], d)
            return NULL if where is False or where is NULL else UNKNOWN
        return UNKNOWN

    def _fold_a_expr(self, node: ast.A_Expr, d: int) -> Value:
        kind = node.kind
        op = operator(node.name)
        left, right = node.lexpr, node.rexpr
        if kind == A_Expr_Kind.AEXPR_NULLIF:
            lv, rv = self.fold(left, d), self.fold(_node(right), d)
            if lv is UNKNOWN or rv is UNKNOWN:
                return UNKNOWN
            return NULL if compare("=", lv, rv) is True else lv
        if kind in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_DISTINCT, A_Expr_Kind.AEXPR_NOT_DISTINCT):
            return self._fold_op(kind, op, left, _node(right), d)
        if kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL):
            array = strip_casts(_node(right))
            if not isinstance(array, ast.A_ArrayExpr):
                return UNKNOWN
            lv = self.fold(left, d)
            vals = [compare(op, lv, self.fold(e, d)) for e in array.elements or ()]
            if kind == A_Expr_Kind.AEXPR_OP_ANY:
                if any(v is True for v in vals):
                    return True
                if vals and all(v is False for v in vals):
                    return False
            else:
                if any(v is False for v in vals):
                    return False
                if all(v is True for v in vals):
                    return True
            return UNKNOWN
        if kind == A_Expr_Kind.AEXPR_IN:
            return self._fold_in(op == "=", left, right if isinstance(right, tuple) else (), d)
        return UNKNOWN

    def _fold_op(self, kind: A_Expr_Kind, op: str, left: Optional[Node], right: Optional[Node], d: int) -> Value:
        if left is None:  # prefix operator
            v = self.fold(right, d)
            if op == "-" and isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v
            return UNKNOWN if v is not NULL else NULL
        lv, rv = self.fold(left, d), self.fold(right, d)
        if kind == A_Expr_Kind.AEXPR_OP:
            res = compare(op, lv, rv)
            if res is UNKNOWN and op in ("=", "<=", ">=") and self.same(left, right):
                return True  # x = x: true for every row where x is not NULL; restricts nothing
            if res is UNKNOWN and op in ("<>", "!=", "<", ">") and self.same(left, right):
                return False
            return res
        # IS [NOT] DISTINCT FROM
        if lv is not UNKNOWN and rv is not UNKNOWN:
            equal = (lv is NULL and rv is NULL) or (lv is not NULL and rv is not NULL and compare("=", lv, rv) is True)
            return equal if kind == A_Expr_Kind.AEXPR_NOT_DISTINCT else not equal
        if self.same(left, right):
            return kind == A_Expr_Kind.AEXPR_NOT_DISTINCT
        return UNKNOWN

    def _fold_in(self, positive: bool, left: Optional[Node], listed: tuple[Node, ...], d: int) -> Value:
        lv = self.fold(left, d)
        if any(self.same(left, i) for i in listed):
            return positive
        vals = [self.fold(i, d) for i in listed]
        if lv is UNKNOWN or any(v is UNKNOWN for v in vals):
            return UNKNOWN
        if lv is NULL:
            return NULL
        if any(compare("=", lv, v) is True for v in vals):
            return positive
        if any(v is NULL for v in vals):
            return NULL
        return not positive

    def _fold_case(self, node: ast.CaseExpr, d: int) -> Value:
        results: list[Optional[Node]] = []
        arg = node.arg
        argv = self.fold(arg, d) if arg is not None else UNKNOWN
        for w in node.args or ():
            if not isinstance(w, ast.CaseWhen):
                continue
            cond = compare("=", argv, self.fold(w.expr, d)) if arg is not None else self.fold(w.expr, d)
            if cond is True:
                results.append(w.result)
                break
            if cond is False or cond is NULL:
                continue
            results.append(w.result)
        else:
            results.append(node.defresult)
        vals = [self.fold(r, d) if r is not None else NULL for r in results]
        if vals and all(v is not UNKNOWN for v in vals) and all(
                compare("=", vals[0], v) is True or (v is NULL and vals[0] is NULL) for v in vals):
            return vals[0]
        return UNKNOWN

    def _fold_call(self, node: ast.FuncCall, d: int) -> Value:
        schema, name = func_name(node)
        if node.args or d > 30 or (schema == "auth" and name in AUTH_FUNCS):
            return UNKNOWN
        fn = self.functions.find(schema, name, 0)
        if fn is None:
            return UNKNOWN
        exprs = self.functions.returns(fn)
        if not exprs:
            return UNKNOWN
        vals = [self.fold(e, d + 5) for e in exprs]
        if all(v is not UNKNOWN for v in vals) and all(compare("=", vals[0], v) is True for v in vals):
            return vals[0]
        return UNKNOWN

    def same(self, a: Any, b: Any) -> bool:
        """Structurally the same expression (ignoring positions and how a column is qualified at top level)."""
        if a is None or b is None or type(a) is not type(b):
            return False
        top = self.state.top_names
        if top:
            self.state.used_table = True
        return canon(a, top) == canon(b, top) and not volatile(a)


def _junction(vals: list[Value], absorbing: bool) -> Value:
    """AND (absorbing False) or OR (absorbing True) of folded values, with SQL's three-valued logic."""
    if any(v is absorbing for v in vals):
        return absorbing
    if all(v is (not absorbing) for v in vals):
        return not absorbing
    return NULL if all(v is (not absorbing) or v is NULL for v in vals) else UNKNOWN


def _node(value: Any) -> Optional[Node]:
    return value if isinstance(value, ast.Node) else None


def _const(node: ast.A_Const) -> Value:
    val = node.val
    if node.isnull:
        return NULL
    if isinstance(val, ast.Boolean):
        return bool(val.boolval)
    if isinstance(val, ast.Integer):
        return int(val.ival or 0)
    if isinstance(val, ast.Float):
        try:
            return float(val.fval or "0")
        except ValueError:
            return UNKNOWN
    if isinstance(val, ast.String):
        return val.sval or ""
    return UNKNOWN


def volatile(node: Any) -> bool:
    return any(isinstance(n, ast.FuncCall) and func_name(n)[1] in _VOLATILE for n in walk(node))


_COMPARED: dict[type, tuple[str, ...]] = {}


def _compared_members(cls: type) -> tuple[str, ...]:
    """A node class's members without its positions in the text (every ``ParseLoc`` member: ``location``,
    ``rexpr_list_start`` of ``IN (...)``, ...)."""
    found = _COMPARED.get(cls)
    if found is None:
        slots: Any = getattr(cls, "__slots__", ())
        found = _COMPARED[cls] = tuple(
            m for m in slots if not (isinstance(slots, dict) and getattr(slots[m], "c_type", None) == "ParseLoc")
            and m != "location")
    return found


def canon(node: Any, top_names: frozenset[str] = frozenset()) -> Any:
    """Structure for comparing expressions: no positions; a column qualified with the policy's own table
    equals the unqualified one."""
    if isinstance(node, ast.ColumnRef):
        fields = names(node.fields)
        if len(fields) >= 2 and fields[-2] in top_names:
            fields = fields[-1:]
        return ("col", tuple(fields))
    if isinstance(node, ast.Node):
        return (type(node).__name__, tuple((m, canon(getattr(node, m), top_names))
                                           for m in _compared_members(type(node))))
    if type(node) is tuple:
        return tuple(canon(v, top_names) for v in node)
    return node


_NUMBER = re.compile(r"\s*[+-]?\d+(\.\d*)?\s*")
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": eq, "<>": ne, "!=": ne, "<": lt, ">": gt, "<=": le, ">=": ge,
}


def compare(op: str, a: Value, b: Value) -> Value:
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    if a is NULL or b is NULL:
        return NULL
    if isinstance(a, bool) != isinstance(b, bool):
        return UNKNOWN
    num = (int, float)
    if not (isinstance(a, bool) or (isinstance(a, num) and isinstance(b, num))
            or (isinstance(a, str) and isinstance(b, str))):
        # a string literal compared with a number is coerced by PostgreSQL
        if isinstance(a, str) and isinstance(b, num) and _NUMBER.fullmatch(a):
            a = float(a)
        elif isinstance(b, str) and isinstance(a, num) and _NUMBER.fullmatch(b):
            b = float(b)
        else:
            return UNKNOWN
    test = _COMPARISONS.get(op)
    return test(a, b) if test is not None else UNKNOWN


def cast_value(v: Value, type_name: str) -> Value:
    if v is UNKNOWN or v is NULL:
        return v
    tn = type_name.lower()
    if tn in ("bool", "boolean"):
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return v != 0
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("t", "true", "y", "yes", "on", "1"):
                return True
            if s in ("f", "false", "n", "no", "off", "0"):
                return False
        return UNKNOWN
    if tn in ("int", "int2", "int4", "int8", "integer", "bigint", "smallint"):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int):
            return v
        if isinstance(v, str) and _INTEGER.fullmatch(v):
            return int(v)
        if isinstance(v, float):
            return int(round(v))
        return UNKNOWN
    if tn in TEXT_TYPES:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    if tn in ("numeric", "decimal", "float4", "float8", "real", "double precision"):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return UNKNOWN
        return UNKNOWN
    # other types (uuid, interval, dates, json, ...): their literals do not compare as text
    return UNKNOWN
