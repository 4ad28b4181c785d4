"""Policy expressions rewritten to run once per query instead of once per row, keeping their meaning.

Two rewrites, on the PostgreSQL parse tree (pglast), printed back with pglast's printer:

- **wrap**: the largest sub-expression that calls a context function (``auth.jwt()``, ``auth.uid()``,
  ``current_setting()``, a configured context function or a non-volatile helper of the schema) and reads no
  column, no sub-query and nothing volatile becomes a scalar sub-query, ``(SELECT ...)``: PostgreSQL then
  evaluates it once per query (an InitPlan) and an index on the compared column can serve it. Its value is the
  same, since what it calls is STABLE.
- **array**: ``col IN (SELECT ...)`` with an uncorrelated sub-query becomes ``col = ANY (ARRAY(SELECT ...))``:
  the same truth value for every row (NULL where IN gives NULL), computed once as an InitPlan that an index on
  ``col`` can serve, instead of a hashed SubPlan probed for every row of the table.

Sub-queries already in scalar form ``(SELECT f())`` are left alone. Pure: no database here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Function, Snapshot, Table
from dbguard_pipeline.text import split_qualified

AUTH_FUNCTIONS = ("jwt", "uid", "role", "email")
VOLATILE_BUILTINS = frozenset(
    {
        "random",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "gen_random_uuid",
        "uuid_generate_v4",
        "uuid_generate_v1",
        "txid_current",
        "pg_sleep",
        "set_config",
        "dblink",
        "pg_notify",
        "random_normal",
    }
)
_WRITES = re.compile(
    r"\b(insert|update|delete|merge|truncate|copy|create|alter|drop|grant|revoke|nextval|setval|"
    r"set_config|perform|execute|dblink|pg_notify|lock|notify|listen|call)\b",
    re.I,
)
_SKIP_ATTRS = frozenset(
    {
        "location",
        "ancestors",
        "fromClause",
        "sortClause",
        "groupClause",
        "windowClause",
        "withClause",
        "lockingClause",
        "valuesLists",
        "typeName",
        "distinctClause",
    }
)


def read_only_body(fn: Function) -> bool:
    """True when the function's body plausibly only reads (SQL or PL/pgSQL, no statement that writes, no dynamic
    SQL, no setting changed): declaring it STABLE keeps its meaning."""
    return fn.language in ("sql", "plpgsql") and fn.body is not None and not _WRITES.search(fn.body)


@dataclass
class Rewrite:
    text: str
    wrapped: list[str] = field(default_factory=list)  # the calls now evaluated once per query
    arrays: list[str] = field(default_factory=list)  # columns whose IN (SELECT ...) became = ANY (ARRAY(...))

    def changes(self) -> list[str]:
        out = [f"{c} wrapped in (select ...)" for c in self.wrapped]
        out += [f"{c} IN (SELECT ...) as {c} = ANY (ARRAY(SELECT ...))" for c in self.arrays]
        return out


def _names(funccall: Any) -> tuple[Optional[str], str]:
    parts = [getattr(s, "sval", "") for s in funccall.funcname]
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


def _slots(node: Any) -> Iterable[str]:
    seen: set[str] = set()
    for cls in type(node).__mro__:
        for attr in getattr(cls, "__slots__", ()) or ():
            if attr not in seen and attr not in _SKIP_ATTRS:
                seen.add(attr)
                yield attr


def _nodes(node: Any) -> Iterable[Any]:
    from pglast import ast

    if isinstance(node, (list, tuple)):
        for x in node:
            yield from _nodes(x)
    elif isinstance(node, ast.Node):
        yield node
        for attr in _slots(node):
            yield from _nodes(getattr(node, attr, None))


class _Rewriter:
    def __init__(self, table: Table, snapshot: Snapshot, config: Config, stabilized: Iterable[str]):
        self.table = table
        self.snapshot = snapshot
        self.functions = {(f.schema, f.name): f for f in snapshot.functions}
        self.stabilized = set(stabilized)  # "schema.name" of helpers the same migration declares STABLE
        self.context = {("auth", n) for n in AUTH_FUNCTIONS} | {
            (None, "current_setting"),
            ("pg_catalog", "current_setting"),
        }
        for name in config.tenant.context_functions:
            self.context.add(split_qualified(name, None))
        self.result = Rewrite("")

    # ------------------------------------------------------------------ judgments on calls
    def _function(self, schema: Optional[str], name: str) -> Optional[Function]:
        if schema is not None:
            return self.functions.get((schema, name))
        found = [f for (s, n), f in self.functions.items() if n == name and s == "public"]
        return found[0] if found else None

    def _volatile(self, call: Any) -> bool:
        schema, name = _names(call)
        if (schema, name) in self.context:
            return False  # the context functions are STABLE (auth.*, current_setting, the configured ones)
        if schema in (None, "pg_catalog") and name in VOLATILE_BUILTINS:
            return True
        fn = self._function(schema, name)
        if fn is None:
            return schema not in (None, "pg_catalog")  # an unknown function of another schema: assume the worst
        return fn.volatility == "volatile" and f"{fn.schema}.{fn.name}" not in self.stabilized

    def _target(self, call: Any) -> bool:
        schema, name = _names(call)
        if (schema, name) in self.context:
            return True
        fn = self._function(schema, name)
        return fn is not None and fn.schema not in ("pg_catalog",)

    def _wrappable(self, node: Any) -> bool:
        from pglast import ast

        if isinstance(node, (ast.A_Const, ast.ColumnRef, ast.ResTarget, ast.SubLink, ast.String, ast.TypeName)):
            return False
        calls = []
        for n in _nodes(node):
            if isinstance(n, (ast.ColumnRef, ast.SubLink, ast.SelectStmt, ast.ParamRef)):
                return False
            if isinstance(n, ast.FuncCall):
                if n.over is not None or n.agg_star or self._volatile(n):
                    return False
                calls.append(n)
        return any(self._target(c) for c in calls)

    # ------------------------------------------------------------------ IN (SELECT ...) -> = ANY (ARRAY(...))
    def _own_column(self, ref: Any) -> Optional[str]:
        from pglast import ast

        if not isinstance(ref, ast.ColumnRef):
            return None
        parts: list[Any] = [getattr(f, "sval", None) for f in (ref.fields or ())]
        if not parts or None in parts or len(parts) > 2 or (len(parts) == 2 and parts[0] != self.table.name):
            return None
        return str(parts[-1]) if self.table.column(parts[-1]) is not None else None

    def _uncorrelated(self, select: Any) -> bool:
        from pglast import ast

        if (
            getattr(select, "op", None) is not None
            and int(select.op) != 0
            or not select.targetList
            or len(select.targetList) != 1
            or not select.fromClause
        ):
            return False
        names: set[str] = set()
        tables = []
        for n in _nodes(select.fromClause) if select.fromClause else ():
            if isinstance(n, ast.RangeVar):
                t = self.snapshot.table(f"{n.schemaname or 'public'}.{n.relname}")
                if t is None:
                    return False
                tables.append(t)
                names.add(str(n.alias.aliasname if n.alias is not None else n.relname))
            elif isinstance(n, (ast.RangeSubselect, ast.RangeFunction)):
                return False
        inner = [select.targetList, select.whereClause, select.havingClause]
        for n in _nodes(inner):
            if isinstance(n, ast.ColumnRef):
                parts: list[Any] = [getattr(f, "sval", None) for f in (n.fields or ())]
                if not parts or None in parts:
                    return False
                if len(parts) >= 2:
                    if parts[-2] not in names:
                        return False
                elif not any(t.column(parts[0]) is not None for t in tables):
                    return False
        return True

    def _as_array(self, sublink: Any) -> Any:
        from pglast import ast, enums

        if sublink.subLinkType != enums.SubLinkType.ANY_SUBLINK:
            return None
        op = [getattr(s, "sval", None) for s in (sublink.operName or ())]
        col = self._own_column(sublink.testexpr)
        if op not in ([], ["="]) or col is None or not self._uncorrelated(sublink.subselect):
            return None
        self.result.arrays.append(col)
        array = ast.SubLink(subLinkType=enums.SubLinkType.ARRAY_SUBLINK, subselect=sublink.subselect)
        return ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_OP_ANY, name=(ast.String("="),), lexpr=sublink.testexpr, rexpr=array
        )

    # ------------------------------------------------------------------ the walk
    def _wrap(self, node: Any) -> Any:
        from pglast import ast, enums
        from pglast.stream import RawStream

        self.result.wrapped.extend(
            f"{RawStream()(ast.FuncCall(funcname=n.funcname))}"
            for n in _nodes(node)
            if isinstance(n, ast.FuncCall) and self._target(n)
        )
        select = ast.SelectStmt(
            targetList=(ast.ResTarget(val=node),),
            limitOption=enums.LimitOption.LIMIT_OPTION_DEFAULT,
            op=enums.SetOperation.SETOP_NONE,
        )
        return ast.SubLink(subLinkType=enums.SubLinkType.EXPR_SUBLINK, subselect=select)

    def visit(self, node: Any) -> Any:
        from pglast import ast, enums

        if isinstance(node, tuple):
            return tuple(self.visit(x) for x in node)
        if not isinstance(node, ast.Node) or isinstance(node, ast.SelectStmt):
            return node
        if isinstance(node, ast.SubLink):
            sel: Any = node.subselect
            if (
                node.subLinkType in (enums.SubLinkType.EXPR_SUBLINK, enums.SubLinkType.ARRAY_SUBLINK)
                and not sel.fromClause
            ):
                return node  # already evaluated once per query
            sel.whereClause = self.visit(sel.whereClause)
            node.testexpr = self.visit(node.testexpr)
            return self._as_array(node) or node
        if self._wrappable(node):
            return self._wrap(node)
        for attr in _slots(node):
            value = getattr(node, attr, None)
            if isinstance(value, (ast.Node, tuple)):
                setattr(node, attr, self.visit(value))
        return node


def _where_clause(expr: str) -> Any:
    import pglast

    stmt: Any = pglast.parse_sql(f"SELECT 1 WHERE {expr}")[0].stmt
    return stmt.whereClause


def rewrite(
    expr: Optional[str], table: Table, snapshot: Snapshot, config: Config, stabilized: Iterable[str] = ()
) -> Optional[Rewrite]:
    """The expression with both rewrites applied, or None when there is nothing to rewrite (or it does not
    parse). ``stabilized``: helpers ("schema.name") the same migration declares STABLE."""
    if not expr:
        return None
    import pglast
    from pglast.stream import RawStream

    try:
        where = _where_clause(expr)
    except pglast.parser.ParseError:
        return None
    rw = _Rewriter(table, snapshot, config, stabilized)
    new = rw.visit(where)
    if not rw.result.wrapped and not rw.result.arrays:
        return None
    rw.result.text = RawStream()(new)
    rw.result.wrapped = list(dict.fromkeys(rw.result.wrapped))
    return rw.result


def called_functions(expr: Optional[str], snapshot: Snapshot) -> list[Function]:
    """The schema's own functions (not platform ones such as auth.*) an expression calls."""
    if not expr:
        return []
    import pglast
    from pglast import ast

    try:
        where = _where_clause(expr)
    except pglast.parser.ParseError:
        return []
    by_name = {(f.schema, f.name): f for f in snapshot.functions}
    out: list[Function] = []
    for n in _nodes(where):
        if isinstance(n, ast.FuncCall):
            schema, name = _names(n)
            fn = by_name.get((schema or "public", name))
            if fn is not None and fn.schema != "auth" and fn not in out:
                out.append(fn)
    return out
