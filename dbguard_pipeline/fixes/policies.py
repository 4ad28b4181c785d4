"""Which existing policies a fix replaces.

When the audit's rules are installed (``rules/rls.py`` registers ``weak_rls_policy`` and
``missing_with_check``), their findings decide. Without them, this small analysis on the PostgreSQL parse
tree (pglast) does: a permissive policy is weak for a command when the expression that governs it (USING for
reads and deletes, WITH CHECK - or USING when absent - for writes) does not pin the tenant column to the
tenant context (the configured GUC, the Supabase JWT claim, a configured context function, or a membership
subquery keyed by the caller). Restrictive policies only ever narrow access and are never replaced.
"""
from __future__ import annotations

from typing import Iterable, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Policy

_AUTH_FUNCS = {("auth", "jwt"), ("auth", "uid")}


def _walk(node) -> Iterable:
    from pglast import ast

    if isinstance(node, (list, tuple)):
        for x in node:
            yield from _walk(x)
    elif isinstance(node, ast.Node):
        yield node
        for cls in type(node).__mro__:
            for attr in getattr(cls, "__slots__", ()) or ():
                if attr in ("ancestors",):
                    continue
                yield from _walk(getattr(node, attr, None))


def _names(funccall) -> tuple[str, ...]:
    return tuple(getattr(s, "sval", "") for s in funccall.funcname)


def _strip(node):
    from pglast import ast

    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node


def _is_column(node, column: str) -> bool:
    from pglast import ast

    node = _strip(node)
    return isinstance(node, ast.ColumnRef) and bool(node.fields) and getattr(node.fields[-1], "sval", None) == column


def _context_calls(node, config: Config, *, membership: bool) -> bool:
    """Does the expression read the tenant context (or, in a membership subquery, the caller's identity)?"""
    from pglast import ast

    tm = config.tenant
    funcs = {tuple(f.split(".")) for f in tm.context_functions} | {(f.split(".")[-1],) for f in tm.context_functions}
    for n in _walk(node):
        if not isinstance(n, ast.FuncCall):
            continue
        names = _names(n)
        if names[-1:] == ("current_setting",) and n.args:
            arg = _strip(n.args[0])
            if isinstance(arg, ast.A_Const) and getattr(arg.val, "sval", None) == tm.guc:
                return True
        if names in funcs or names[-1:] in funcs:
            return True
        if names == ("auth", "jwt"):
            return True
        if membership and names in _AUTH_FUNCS:
            return True
    return False


def pins_tenant(expr: Optional[str], column: str, config: Config) -> bool:
    """True when the policy expression restricts rows to the current tenant (conjunctively)."""
    if not expr:
        return False
    import pglast
    from pglast import ast
    from pglast.enums import A_Expr_Kind, BoolExprType, SubLinkType

    try:
        where = pglast.parse_sql(f"SELECT 1 WHERE {expr}")[0].stmt.whereClause
    except Exception:
        return False

    def pins(node) -> bool:
        node = _strip(node)
        if isinstance(node, ast.BoolExpr):
            if node.boolop == BoolExprType.AND_EXPR:
                return any(pins(a) for a in node.args)
            if node.boolop == BoolExprType.OR_EXPR:
                return all(pins(a) for a in node.args)
            return False
        if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP and \
                [getattr(s, "sval", None) for s in node.name] == ["="]:
            for a, b in ((node.lexpr, node.rexpr), (node.rexpr, node.lexpr)):
                if _is_column(a, column) and not any(_is_column(x, column) for x in _walk(b)) and \
                        _context_calls(b, config, membership=isinstance(_strip(b), ast.SubLink)):
                    return True
            return False
        if isinstance(node, ast.SubLink):
            if node.subLinkType == SubLinkType.ANY_SUBLINK and _is_column(node.testexpr, column):
                return _context_calls(node.subselect, config, membership=True)
            if node.subLinkType == SubLinkType.EXISTS_SUBLINK:
                mentions = any(_is_column(x, column) for x in _walk(node.subselect))
                return mentions and _context_calls(node.subselect, config, membership=True)
        return False

    return pins(where)


def policy_is_weak(policy: Policy, column: str, config: Config) -> bool:
    if not policy.permissive:
        return False
    cmd = policy.command
    if cmd in ("all", "select", "update", "delete") and not pins_tenant(policy.using, column, config):
        return True
    if cmd in ("all", "insert", "update"):
        check = policy.with_check if policy.with_check is not None else policy.using
        if not pins_tenant(check, column, config):
            return True
    return False
