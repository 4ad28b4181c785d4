"""Which row a column reference reads: the policy's own table (level 0) or a subquery's relations (level 1, 2,
...), and the explicit state one analysis carries down the tree.

* :class:`Scope` -- the names and columns one query level makes visible;
* :class:`Frame` -- passed down (never mutated): the scope levels, the depth, the functions being inlined;
* :class:`Pass` -- one analysis of one expression: the policy's table name and whether the answer depended
  on it (so that results which do not can be shared between tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

from pglast import ast

from dbguard_pipeline.model.schema import Function, Snapshot, Table
from dbguard_pipeline.policy.parse import Node, names

OUTER = "\x00L"  # qualifier prefix of column references bound to a known scope level (see inline.bind)
MAX_INLINED = 6  # functions inlined into one another at most

Column = tuple[int, str]  # (scope level, column name)
FunctionKey = tuple[str, str, str]  # (schema, name, arguments)


@dataclass(frozen=True)
class Scope:
    names: frozenset[str]
    columns: Optional[frozenset[str]]  # None: unknown (a relation dbguard does not know)


class Frame(NamedTuple):
    """Where the analysis is: scope levels (0 = the policy's table), depth (a guard against runaway
    recursion), the functions whose bodies are being inlined, and whether one of them is SECURITY DEFINER.
    Immutable: each step down the tree makes the frame it passes on."""

    scopes: tuple[Scope, ...]
    depth: int = 0
    inlining: tuple[FunctionKey, ...] = ()
    definer: bool = False

    def deeper(self) -> Frame:
        return Frame(self.scopes, self.depth + 1, self.inlining, self.definer)

    def at_depth(self, depth: int) -> Frame:
        return Frame(self.scopes, depth, self.inlining, self.definer)

    def within(self, scope: Scope) -> Frame:
        """One query level further in (a subquery)."""
        return Frame(self.scopes + (scope,), self.depth, self.inlining, self.definer)

    def inline(self, fn: Function) -> Optional[Frame]:
        """The frame inside ``fn``'s body; None when it is already being inlined (recursion) or too many are."""
        key = (fn.schema, fn.name, fn.arguments)
        if key in self.inlining or len(self.inlining) >= MAX_INLINED:
            return None
        return Frame(self.scopes, self.depth, self.inlining + (key,), self.definer or fn.security_definer)

    @property
    def inner(self) -> int:
        """The innermost scope level."""
        return len(self.scopes) - 1


@dataclass
class Pass:
    """One analysis of one expression on one table."""

    top_names: frozenset[str] = frozenset()  # the policy's table, by which its columns may be qualified
    used_table: bool = False  # did the answer depend on the policy's table (its name or its columns)?


class Tables:
    """The snapshot's tables by (schema, name), and by name alone where unambiguous."""

    def __init__(self, snapshot: Optional[Snapshot]):
        self._by_key: dict[tuple[str, str], Table] = {}
        self._by_name: dict[str, list[Table]] = {}
        for t in snapshot.tables if snapshot else ():
            self._by_key[(t.schema, t.name)] = t
            self._by_name.setdefault(t.name, []).append(t)

    def find(self, schema: Optional[str], name: str) -> Optional[Table]:
        if schema:
            return self._by_key.get((schema, name))
        if ("public", name) in self._by_key:
            return self._by_key[("public", name)]
        found = self._by_name.get(name, [])
        return found[0] if len(found) == 1 else None


def top_scope(table: Optional[Table]) -> Scope:
    if table is None:
        return Scope(names=frozenset(), columns=None)
    return Scope(names=frozenset({table.name}), columns=frozenset(c.name for c in table.columns))


def scope_of(sel: ast.SelectStmt, tables: Tables) -> Scope:
    """The names and columns a SELECT's FROM clause makes visible."""
    found: set[str] = set()
    columns: Optional[set[str]] = set()

    def add(item: Optional[Node]) -> None:
        nonlocal columns
        if isinstance(item, ast.RangeVar):
            alias = item.alias.aliasname if item.alias is not None else None
            found.add(alias or item.relname or "")
            tbl = tables.find(item.schemaname, item.relname or "")
            if tbl is None or columns is None:
                columns = None
            else:
                columns |= {c.name for c in tbl.columns}
        elif isinstance(item, ast.JoinExpr):
            add(item.larg)
            add(item.rarg)
            if item.alias is not None and item.alias.aliasname:
                found.add(item.alias.aliasname)
        elif isinstance(item, (ast.RangeSubselect, ast.RangeFunction)):
            named = item.alias
            if named is not None and named.aliasname:
                found.add(named.aliasname)
            cols = names(named.colnames if named is not None else None)
            if cols and columns is not None:
                columns |= set(cols)
            else:
                columns = None
        else:
            columns = None

    for item in sel.fromClause or ():
        add(item)
    return Scope(names=frozenset(found), columns=frozenset(columns) if columns is not None else None)


def resolve(fields: list[str], frame: Frame, state: Pass) -> int:
    """The scope level a column reference belongs to."""
    scopes, inner = frame.scopes, frame.inner
    if len(fields) >= 2:
        q = fields[-2]
        if q.startswith(OUTER):
            return int(q[len(OUTER) :])
        for lvl in range(inner, -1, -1):
            if q in scopes[lvl].names:
                return lvl
        # The names of every subquery's relations are known from its FROM clause, so a qualifier that
        # matches none of them is the policy's own table.
        return 0
    col = fields[0] if fields else ""
    for lvl in range(inner, -1, -1):
        sc = scopes[lvl]
        if lvl == 0 and inner > 0:
            state.used_table = True
        if sc.columns is None or col in sc.columns:
            return lvl
    return inner


def column(node: Optional[Node], frame: Frame, state: Pass) -> Optional[Column]:
    """(level, column) when node is a column reference (through casts and COLLATE), else None."""
    while isinstance(node, (ast.TypeCast, ast.CollateClause)):
        node = node.arg
    if not isinstance(node, ast.ColumnRef):
        return None
    fields = names(node.fields)
    if not fields or fields[-1] == "*":
        return None
    return resolve(fields, frame, state), fields[-1]
