"""Equivalent spellings, rewritten to one form before the analysis reads an expression.

Only rewrites that keep the value of the expression for every row, NULL included, so that they hold in any
position (under NOT, inside CASE, as a function's result):

* a scalar subquery that reads no table is its value: ``(select auth.role())`` -> ``auth.role()``,
  ``(select current_setting('k', true))``, ``(select helper(x))`` (PostgreSQL evaluates it once per query
  instead of once per row: the value is the same);
* a boolean compared with a boolean constant: ``x = true``, ``true = x``, ``x <> false`` -> ``x``;
  ``x = false``, ``x <> true`` -> ``NOT x``; ``x IS [NOT] DISTINCT FROM true/false`` -> ``x IS [NOT] TRUE/FALSE``
  (a policy expression has been type checked, so the other side is boolean);
* ``NOT NOT x`` -> ``x``;
* ``x IN (v)`` -> ``x = v``, ``x NOT IN (v)`` -> ``x <> v``, ``x op ANY/ALL (ARRAY[v])`` -> ``x op v``.

What is equivalent only where NULL counts as false (``x IS TRUE``, ``coalesce(x, false)``: the truth of a
policy, not its value) is the restriction analysis' business (restriction.py), not a rewrite: ``NOT (x IS TRUE)``
is not ``NOT x``. ``x IS NOT FALSE`` and ``coalesce(x, true)`` admit the rows where ``x`` is NULL, so they are
never ``x``.

Parsed trees are shared (parse.py caches them): a rewrite builds new nodes and keeps unchanged subtrees.
"""

from __future__ import annotations

from typing import Any, Optional

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, BoolTestType, SubLinkType

from dbguard_pipeline.policy.parse import Node, func_name, operator, type_name, with_members

MAX_DEPTH = 120  # deeper nesting is left as written (the analysis has its own depth limits)

# aggregates and window calls change meaning when moved out of their (select ...)
_AGGREGATES = frozenset(
    {
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "every",
        "jsonb_agg",
        "json_agg",
        "jsonb_object_agg",
        "json_object_agg",
        "bit_and",
        "bit_or",
        "xmlagg",
    }
)
_SELECT_CLAUSES = (
    "distinctClause",
    "intoClause",
    "fromClause",
    "whereClause",
    "groupClause",
    "havingClause",
    "windowClause",
    "valuesLists",
    "sortClause",
    "limitOffset",
    "limitCount",
    "lockingClause",
    "withClause",
    "larg",
    "rarg",
)


def normalize(node: Optional[Node]) -> Optional[Node]:
    """The expression with equivalent spellings rewritten (see the module docstring); ``node`` itself when
    nothing changed."""
    return _norm(node, 0) if node is not None else None


def _norm(node: Node, depth: int) -> Node:
    if depth > MAX_DEPTH:
        return node
    node = _children(node, depth + 1)
    # a rewrite may expose another one (NOT NOT (x = true)): apply until nothing changes
    for _ in range(8):
        out = _rewrite(node)
        if out is node:
            return node
        node = out
    return node


def _children(node: Node, depth: int) -> Node:
    changed: dict[str, Any] = {}
    for m in node:
        value = getattr(node, m)
        new: Any
        if isinstance(value, ast.Node):
            new = _norm(value, depth)
        elif type(value) is tuple:
            new = _tuple(value, depth)
        else:
            continue
        if new is not value:
            changed[m] = new
    if not changed:
        return node
    return with_members(node, changed)


def _tuple(values: tuple[Any, ...], depth: int) -> tuple[Any, ...]:
    out = tuple(
        _norm(v, depth) if isinstance(v, ast.Node) else (_tuple(v, depth) if type(v) is tuple else v) for v in values
    )
    return values if all(a is b for a, b in zip(out, values, strict=True)) else out


def _rewrite(node: Node) -> Node:
    if isinstance(node, ast.SubLink):
        value = scalar_value(node)
        return value if value is not None else node
    if isinstance(node, ast.BoolExpr):
        return _not_not(node)
    if isinstance(node, ast.A_Expr):
        return _a_expr(node)
    return node


def scalar_value(node: ast.SubLink) -> Optional[Node]:
    """The value of ``(SELECT <expr>)`` without FROM, WHERE, grouping, limits or aggregates; else None."""
    sel = node.subselect
    if node.subLinkType != SubLinkType.EXPR_SUBLINK or not isinstance(sel, ast.SelectStmt):
        return None
    if sel.op or any(getattr(sel, m) for m in _SELECT_CLAUSES) or len(sel.targetList or ()) != 1:
        return None
    target = sel.targetList[0] if sel.targetList else None
    if not isinstance(target, ast.ResTarget) or target.indirection or target.val is None:
        return None
    if isinstance(target.val, ast.FuncCall) and _aggregate(target.val):
        return None
    return target.val


def _aggregate(call: ast.FuncCall) -> bool:
    return bool(
        call.over
        or call.agg_star
        or call.agg_distinct
        or call.agg_order
        or call.agg_filter
        or call.agg_within_group
        or func_name(call)[1] in _AGGREGATES
    )


def bool_const(node: Optional[Node]) -> Optional[bool]:
    """True/False for a boolean constant (``true``, ``'t'::boolean``), else None."""
    if isinstance(node, ast.TypeCast) and type_name(node).lower() in ("bool", "boolean"):
        inner = node.arg
        if isinstance(inner, ast.A_Const) and isinstance(inner.val, ast.String) and not inner.isnull:
            s = (inner.val.sval or "").strip().lower()
            if s in ("t", "true", "y", "yes", "on", "1"):
                return True
            if s in ("f", "false", "n", "no", "off", "0"):
                return False
            return None
        return bool_const(inner)
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Boolean) and not node.isnull:
        return bool(node.val.boolval)
    return None


def _is_const(node: Optional[Node]) -> bool:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return isinstance(node, ast.A_Const)


def _negate(node: Node) -> Node:
    return ast.BoolExpr(boolop=BoolExprType.NOT_EXPR, args=(node,))


def _not_not(node: ast.BoolExpr) -> Node:
    args = node.args or ()
    if node.boolop == BoolExprType.NOT_EXPR and len(args) == 1:
        arg = args[0]
        inner = arg.args or () if isinstance(arg, ast.BoolExpr) else ()
        if (
            isinstance(arg, ast.BoolExpr)
            and arg.boolop == BoolExprType.NOT_EXPR
            and len(inner) == 1
            and isinstance(inner[0], ast.Node)
        ):
            return inner[0]
        # NOT (x IS TRUE) is x IS NOT TRUE (a boolean test is never NULL); so is NOT (x IS DISTINCT FROM false),
        # which is how PostgreSQL prints x IS NOT DISTINCT FROM false (the inner test is rewritten first)
        if isinstance(arg, ast.BooleanTest) and arg.booltesttype in _INVERSE:
            return ast.BooleanTest(arg=arg.arg, booltesttype=_INVERSE[arg.booltesttype])
    return node


_INVERSE = {
    BoolTestType.IS_TRUE: BoolTestType.IS_NOT_TRUE,
    BoolTestType.IS_NOT_TRUE: BoolTestType.IS_TRUE,
    BoolTestType.IS_FALSE: BoolTestType.IS_NOT_FALSE,
    BoolTestType.IS_NOT_FALSE: BoolTestType.IS_FALSE,
    BoolTestType.IS_UNKNOWN: BoolTestType.IS_NOT_UNKNOWN,
    BoolTestType.IS_NOT_UNKNOWN: BoolTestType.IS_UNKNOWN,
}


def _distinct_test(node: ast.A_Expr, negated: bool) -> Optional[Node]:
    """``x IS [NOT] DISTINCT FROM <boolean constant>`` as the boolean test it is."""
    right = node.rexpr if isinstance(node.rexpr, ast.Node) else None
    for value, const in ((node.lexpr, right), (right, node.lexpr)):
        c = bool_const(const)
        if c is None or value is None or _is_const(value):
            continue
        if negated:  # IS NOT DISTINCT FROM
            kind = BoolTestType.IS_TRUE if c else BoolTestType.IS_FALSE
        else:
            kind = BoolTestType.IS_NOT_TRUE if c else BoolTestType.IS_NOT_FALSE
        return ast.BooleanTest(arg=value, booltesttype=kind)
    return None


def _a_expr(node: ast.A_Expr) -> Node:
    kind, op = node.kind, operator(node.name)
    right = node.rexpr if isinstance(node.rexpr, ast.Node) else None
    if kind == A_Expr_Kind.AEXPR_OP and op in ("=", "<>", "!=") and node.lexpr is not None and right is not None:
        for value, const in ((node.lexpr, right), (right, node.lexpr)):
            c = bool_const(const)
            if c is None or _is_const(value):
                continue
            keep = c if op == "=" else not c
            return value if keep else _negate(value)
        return node
    if kind == A_Expr_Kind.AEXPR_NOT_DISTINCT:
        return _distinct_test(node, negated=True) or node
    if kind == A_Expr_Kind.AEXPR_DISTINCT:
        return _distinct_test(node, negated=False) or node
    if kind == A_Expr_Kind.AEXPR_IN and type(node.rexpr) is tuple and len(node.rexpr) == 1:
        item = node.rexpr[0]
        if isinstance(item, ast.Node):
            return ast.A_Expr(
                kind=A_Expr_Kind.AEXPR_OP,
                name=(ast.String(sval="=" if op == "=" else "<>"),),
                lexpr=node.lexpr,
                rexpr=item,
            )
    if kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL) and isinstance(right, ast.A_ArrayExpr):
        elements = right.elements or ()
        if (
            len(elements) == 1
            and isinstance(elements[0], ast.Node)
            and not isinstance(elements[0], (ast.A_ArrayExpr, ast.SubLink))
        ):  # ARRAY[ARRAY[...]] is a 2-D array of elements
            return ast.A_Expr(kind=A_Expr_Kind.AEXPR_OP, name=node.name, lexpr=node.lexpr, rexpr=elements[0])
    return node
