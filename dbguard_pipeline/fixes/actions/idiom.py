"""The database's own tenancy idiom, and the one textual rewrite a performance fix may make.

- :func:`wrap_calls`: ``auth.uid()`` (and ``auth.jwt()``, ``auth.role()``, ``auth.email()``,
  ``current_setting(...)``) outside a scalar subquery becomes ``(select auth.uid())``; nothing else of the
  expression changes (the auth_rls_initplan fix never changes what a policy means).
- :func:`find_idiom`: the predicate a generated policy pins the tenant with, taken from the policies the
  analyzer already accepts as pinning the tenant, the read idiom (USING of SELECT and ALL policies) before the
  write-only ones: the table's own first, then the most common one of the
  sibling tables (same schema, same tenant column). It may be a GUC with NULLIF, a JWT claim at its real path,
  a membership subquery or a helper function such as ``current_farm()``; the sibling's table name in a
  qualified column reference is replaced with this table's. None when no policy pins the tenant.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any, Optional

from pglast import ast
from pglast.enums import SubLinkType
from pglast.parser import ParseError, parse_sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.semantics.roles import RoleGraph
from dbguard_pipeline.text import qname, quoted

_AUTH_FUNCS = frozenset({"uid", "jwt", "role", "email"})
_PREFIX = "SELECT "
_IDENT = r'(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = re.compile(rf"({_IDENT})\s*\.\s*({_IDENT})")


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, tuple):
        yield from node
        return
    if not isinstance(node, ast.Node):
        return
    for name in node:
        value = getattr(node, name)
        if isinstance(value, (ast.Node, tuple)):
            yield value


def _names(items: Any) -> list[str]:
    return [n.sval or "" for n in items or () if isinstance(n, ast.String)]


def _targets(stmts: Any) -> Any:
    stmt = stmts[0].stmt
    return stmt.targetList if isinstance(stmt, ast.SelectStmt) else ()


def _call_end(text: str, start: int) -> int:
    """The index just past the call that starts at ``start`` (its closing parenthesis)."""
    i = text.index("(", start)
    depth, quote = 0, None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced call")


def per_row_call_spans(text: str) -> list[int]:
    """Start offsets (in ``text``) of the auth/current_setting calls not inside a scalar subquery."""
    try:
        stmts = parse_sql(_PREFIX + text)
    except ParseError:
        return []
    found: list[int] = []
    stack: list[tuple[Any, bool]] = [(_targets(stmts), False)]
    while stack:
        node, wrapped = stack.pop()
        if isinstance(node, ast.SubLink) and node.subLinkType in (SubLinkType.EXPR_SUBLINK, SubLinkType.ARRAY_SUBLINK):
            stack.extend((n, w) for n, w in ((node.testexpr, wrapped), (node.subselect, True)) if n is not None)
            continue
        if isinstance(node, ast.FuncCall) and not wrapped:
            parts = _names(node.funcname)
            schema, name = (parts[-2] if len(parts) > 1 else None), (parts[-1] if parts else "")
            if (schema == "auth" and name in _AUTH_FUNCS) or (
                schema in (None, "pg_catalog") and name == "current_setting"
            ):
                found.append((node.location or 0) - len(_PREFIX))
                continue
        stack.extend((c, wrapped) for c in _children(node))
    return sorted(set(found))


def wrap_calls(text: Optional[str]) -> Optional[str]:
    """``text`` with each per-row auth/current_setting call wrapped in ``(select ...)``; nothing else changes."""
    if text is None:
        return None
    out = text
    for start in sorted(per_row_call_spans(text), reverse=True):
        end = _call_end(out, start)
        out = f"{out[:start]}(select {out[start:end]}){out[end:]}"
    return out


def _requalify(text: str, old_table: str, new_table: str, column: str) -> str:
    """``old_table.column`` references become ``new_table.column`` (by the parser's column locations)."""
    try:
        stmts = parse_sql(_PREFIX + text)
    except ParseError:
        return text
    spots: list[int] = []
    stack: list[Any] = [_targets(stmts)]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.ColumnRef):
            f = _names(node.fields)
            if len(f) == 2 and f[0] == old_table and f[1] == column:
                spots.append((node.location or 0) - len(_PREFIX))
            continue
        stack.extend(_children(node))
    out = text
    for start in sorted(spots, reverse=True):
        m = _QUALIFIED.match(out, start)
        if m is None:
            continue
        out = f"{out[:start]}{quoted(new_table)}.{m.group(2)}{out[m.end() :]}"
    return out


def _pinning_expressions(snapshot: Snapshot, config: Config, table: Table, reads_only: bool = False) -> list[str]:
    """The USING / WITH CHECK texts of ``table``'s policies that the analyzer accepts as pinning the tenant,
    the read idiom first: the USING of SELECT and ALL policies (who may see the tenant's rows: every member),
    then the rest (write policies are often narrower: ``has_role_on_account(account_id, 'owner')``), each text
    once. ``reads_only``: the read idiom alone."""
    from dbguard_pipeline.policy.analyzer import analyzer_for

    an = analyzer_for(snapshot, config)
    column = tenancy.tenant_column(table, config)
    if column is None:
        return []
    read: list[str] = []
    other: list[str] = []
    app = config.tenant.app_role
    graph = RoleGraph(snapshot)
    for p in table.policies:
        if not p.permissive or not graph.policy_applies(p, app):
            continue  # a policy for another role says nothing about how the application sends its tenant
        using, check = an.analyze_policy(table, p, column)
        for text, a, reads in ((p.using, using, p.command in ("all", "select")), (p.with_check, check, False)):
            if (
                text
                and a is not None
                and a.pins_tenant
                and not a.always_false
                and not a.unsafe_casts
                and not a.user_metadata
            ):
                (read if reads else other).append(text)
    return list(dict.fromkeys(read if reads_only else read + other))


def find_idiom(
    snapshot: Snapshot, config: Config, table: Table, column: str, skip: frozenset[str] = frozenset()
) -> Optional[tuple[str, str]]:
    """(predicate for ``table``, where it comes from), or None. ``skip``: policy names of ``table`` that are
    being replaced (never a source)."""
    own = [t for t in (dataclass_without(table, skip),) if t is not None]
    for t in own:
        exprs = _pinning_expressions(snapshot, config, t)
        if exprs:
            return wrap_calls(exprs[0]) or exprs[0], f"the table's own policies ({qname(table.schema, table.name)})"
    siblings = [
        t
        for t in snapshot.tables
        if t.schema == table.schema
        and t.qualified != table.qualified
        and t.kind != "partition"
        and not tenancy.is_tenants_table(t, config)
        and tenancy.tenant_column(t, config) == column
    ]
    # the siblings' read idiom (what lets every member see a tenant's rows) when one exists: the generated
    # policy covers every command, and a write-only idiom (owners only) would lock the other members out
    for reads_only in (True, False):
        counts: Counter[str] = Counter()
        first_source: dict[str, tuple[str, str]] = {}
        for t in siblings:
            for e in _pinning_expressions(snapshot, config, t, reads_only):
                moved = _requalify(e, t.name, table.name, column)
                counts[moved] += 1
                first_source.setdefault(moved, (t.schema, t.name))
        if counts:
            break
    if not counts:
        return None
    best = sorted(counts.items(), key=lambda kv: (-kv[1], first_source[kv[0]]))[0][0]
    return wrap_calls(best) or best, f"the sibling policies (as on {qname(*first_source[best])})"


def dataclass_without(table: Table, skip: frozenset[str]) -> Optional[Table]:
    import dataclasses

    kept = tuple(p for p in table.policies if p.name not in skip)
    return dataclasses.replace(table, policies=kept) if kept else None
