"""A short, readable rendering of expression nodes for finding messages (``current_setting('x')::uuid``).

Not :class:`pglast.stream.RawStream`: messages are part of the reports users compare from run to run, and this
printer's output (no ``pg_catalog.``, subqueries shown as ``SELECT ...``, identifiers quoted only when they are
not plain lower-case names) is what they have always read.
"""

from __future__ import annotations

import re
from typing import Optional

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType, SubLinkType

from dbguard_pipeline.policy.parse import Node, func_name, names, single_value, type_name
from dbguard_pipeline.policy.scope import OUTER

_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def snippet(node: Optional[Node], limit: int = 120) -> str:
    """A readable (not necessarily complete) rendering of an expression node."""
    text = render(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _q(name: Optional[str]) -> str:
    # Plain names as they are, anything else in double quotes; keywords are not quoted (messages only).
    return name if name and _PLAIN.fullmatch(name) else '"' + (name or "").replace('"', '""') + '"'


def _const(node: ast.A_Const) -> str:
    val = node.val
    if node.isnull:
        return "NULL"
    if isinstance(val, ast.Boolean):
        return "true" if val.boolval else "false"
    if isinstance(val, ast.Integer):
        return str(val.ival or 0)
    if isinstance(val, ast.Float):
        return str(val.fval or "0")
    if isinstance(val, ast.String):
        return "'" + (val.sval or "").replace("'", "''") + "'"
    return "?"


def _list(nodes: Optional[tuple[Node, ...]]) -> str:
    return ", ".join(render(a) for a in nodes or ())


def _a_expr(node: ast.A_Expr) -> str:
    op = " ".join(names(node.name))
    left = node.lexpr
    right = node.rexpr if isinstance(node.rexpr, ast.Node) else None
    if node.kind == A_Expr_Kind.AEXPR_NULLIF:
        return f"nullif({render(left)}, {render(right)})"
    if node.kind == A_Expr_Kind.AEXPR_OP_ANY:
        return f"{render(left)} {op} ANY ({render(right)})"
    if node.kind == A_Expr_Kind.AEXPR_IN:
        listed = _list(node.rexpr) if isinstance(node.rexpr, tuple) else ""
        return f"{render(left)} {'IN' if op == '=' else 'NOT IN'} ({listed})"
    if left is None:
        return f"{op} {render(right)}"
    return f"({render(left)} {op} {render(right)})"


def _sublink(node: ast.SubLink) -> str:
    value = single_value(node.subselect)
    inner = "SELECT " + render(value) if value is not None else "SELECT ..."
    kind = node.subLinkType
    if kind == SubLinkType.EXISTS_SUBLINK:
        return f"EXISTS ({inner})"
    if kind == SubLinkType.ANY_SUBLINK:
        return f"{render(node.testexpr)} IN ({inner})"
    if kind == SubLinkType.ARRAY_SUBLINK:
        return f"ARRAY({inner})"
    return f"({inner})"


def render(node: Optional[Node]) -> str:
    if isinstance(node, ast.A_Const):
        return _const(node)
    if isinstance(node, ast.ColumnRef):
        return ".".join("*" if n == "*" else _q(n) for n in names(node.fields) if not n.startswith(OUTER))
    if isinstance(node, ast.FuncCall):
        schema, name = func_name(node)
        return f"{_q(schema) + '.' if schema else ''}{_q(name)}({'*' if node.agg_star else _list(node.args)})"
    if isinstance(node, ast.TypeCast):
        return f"{render(node.arg)}::{type_name(node)}"
    if isinstance(node, ast.A_Expr):
        return _a_expr(node)
    if isinstance(node, ast.BoolExpr):
        args = node.args or ()
        if node.boolop == BoolExprType.NOT_EXPR:
            return f"NOT {render(args[0] if args else None)}"
        sep = " AND " if node.boolop == BoolExprType.AND_EXPR else " OR "
        return "(" + sep.join(render(a) for a in args) + ")"
    if isinstance(node, ast.SubLink):
        return _sublink(node)
    if isinstance(node, ast.CoalesceExpr):
        return f"coalesce({_list(node.args)})"
    if isinstance(node, ast.NullTest):
        return f"{render(node.arg)} IS {'NOT ' if node.nulltesttype == NullTestType.IS_NOT_NULL else ''}NULL"
    if isinstance(node, ast.SQLValueFunction):
        return node.op.name.replace("SVFOP_", "").lower() if node.op is not None else ""
    if isinstance(node, ast.A_ArrayExpr):
        return f"ARRAY[{_list(node.elements)}]"
    if isinstance(node, ast.ParamRef):
        return f"${node.number or 0}"
    return "..."
