"""What the probe reads from the policies (with the policy analyzer): the columns of a table that hold the acting
user, and the settings the database's policies read (to refuse a tenant context that no policy reads)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional

from pglast import ast

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import ConfigError
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.policy import Analyzer, ContextKind
from dbguard_pipeline.policy.context import is_setting_read
from dbguard_pipeline.policy.parse import Node, PolicyParseError, parse_expression, policy_expressions
from dbguard_pipeline.policy.scope import Frame, top_scope

if TYPE_CHECKING:
    from dbguard_pipeline.probe.rows import RowTenancy

_SETTING_IN_BODY = re.compile(r"current_setting\s*\(\s*'([^']+)'", re.IGNORECASE)


def _top_level(node: Optional[Node]):
    """Nodes of an expression outside its subqueries (a column there is a column of the policy's table)."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, tuple):
            stack.extend(cur)
            continue
        if not isinstance(cur, ast.Node):
            continue
        yield cur
        if isinstance(cur, ast.SubLink):
            continue
        for member in cur:
            stack.append(getattr(cur, member))


def _column_of(node: Any, table: Table) -> Optional[str]:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if not isinstance(node, ast.ColumnRef):
        return None
    names = [str(f.sval) for f in node.fields or () if isinstance(f, ast.String)]
    if len(names) == 1 or (len(names) == 2 and names[0] == table.name):
        return names[-1] if table.column(names[-1]) is not None else None
    return None


def identity_columns(analyzer: Optional[Analyzer], table: Table, row_tenancy: RowTenancy) -> tuple[str, ...]:
    """Columns of ``table`` that hold the acting user: compared (``=``) with the caller's identity
    (``auth.uid()``, the ``sub`` claim, ``current_user``, ...) in one of its policies, or referencing a users
    table; never the columns that decide the row's tenant."""
    info = row_tenancy.info(table)
    skip = set(info.assign_columns) if info is not None else set()
    found: list[str] = []
    if analyzer is not None:
        frame = Frame((top_scope(table),))
        for node in policy_expressions(table.policies):
            if node is None:
                continue  # unreadable: it names no column here
            walker = analyzer.walker()
            for n in _top_level(node):
                if not (isinstance(n, ast.A_Expr) and [s.sval for s in n.name or ()] == ["="]):
                    continue
                for col, other in ((_column_of(n.lexpr, table), n.rexpr), (_column_of(n.rexpr, table), n.lexpr)):
                    if (
                        col
                        and col not in found
                        and col not in skip
                        and isinstance(other, ast.Node)
                        and walker.kind(other, frame) is ContextKind.IDENTITY
                    ):
                        found.append(col)
    for fk in table.foreign_keys:
        if (
            fk.ref_table == "users"
            and len(fk.columns) == 1
            and fk.columns[0] not in skip
            and fk.columns[0] not in found
        ):
            found.append(fk.columns[0])
    return tuple(found)


def settings_read(snapshot: Snapshot) -> set[str]:
    """The settings (``current_setting('x')``) that the policies of the database read, directly or through a
    function (function bodies are read as text: PL/pgSQL is not an expression)."""
    out: set[str] = set()
    for t in snapshot.tables:
        for p in t.policies:
            for text in (p.using, p.with_check):
                if not text:
                    continue
                try:
                    node = parse_expression(text)
                except PolicyParseError:
                    out.update(m.lower() for m in _SETTING_IN_BODY.findall(text))
                    continue
                for n in _walk_all(node):
                    if isinstance(n, ast.FuncCall) and is_setting_read(n) and n.args:
                        arg = n.args[0]
                        if isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.String) and arg.val.sval:
                            out.add(str(arg.val.sval).lower())
    for f in snapshot.functions:
        out.update(m.lower() for m in _SETTING_IN_BODY.findall(f.body or ""))
    return out


def _walk_all(node: Node):
    from dbguard_pipeline.policy.parse import walk

    return walk(node)


def check_context(snapshot: Snapshot, config: Config) -> None:
    """A GUC tenant context that no policy or function of the database reads, while they read another custom
    setting, is a typo in the config: every probe would run without a tenant and prove nothing (ConfigError)."""
    tm = config.tenant
    if tm.context != "guc":
        return
    if "." not in tm.guc:
        raise ConfigError(
            f"tenant.guc is {tm.guc!r}: PostgreSQL only lets an application set a custom setting "
            f"with a prefix (such as app.current_tenant_id), so no tenant context could be set"
        )
    read = settings_read(snapshot)
    if tm.guc.lower() in read:
        return
    custom = sorted(s for s in read if "." in s and not s.startswith("request.jwt"))
    if custom:
        raise ConfigError(
            f"tenant.guc is {tm.guc!r}, but no policy or function in {snapshot.database} reads it; "
            f"they read {', '.join(custom)}: set tenant.guc to the setting the application sets"
        )
