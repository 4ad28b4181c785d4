"""Splitting a migration file into units (steps), with the PostgreSQL parser (pglast):
* ``BEGIN; ... COMMIT;`` written in the file: one transaction;
* a statement right after the marker line ``-- dbguard:no-transaction``, or one PostgreSQL refuses to run in
  a transaction block (CREATE/DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VACUUM, ...): on its own,
  outside any transaction;
* every other run of consecutive statements: one transaction (so a hand-written file without BEGIN/COMMIT
  is applied atomically, as a migration tool would).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from dbguard_pipeline.errors import MigrationError
from dbguard_pipeline.fixes.sql import NO_TRANSACTION_MARKER

_MARKER = re.compile(r"^[ \t]*" + re.escape(NO_TRANSACTION_MARKER) + r"[ \t]*$", re.M)


@dataclass(frozen=True)
class IndexTarget:
    """The index a ``CREATE [UNIQUE] INDEX CONCURRENTLY`` statement builds: its table, and its name (None when
    the statement leaves the name to PostgreSQL)."""

    schema: Optional[str]
    table: str
    name: Optional[str]
    if_not_exists: bool


@dataclass(frozen=True)
class Unit:
    transactional: bool
    statements: tuple[str, ...]
    line: int  # line of the first statement in the file
    index: Optional[IndexTarget] = None  # a CREATE INDEX CONCURRENTLY step

    @property
    def changes_schema(self) -> bool:
        return any(not re.match(r"(?is)^\s*(set|reset)\b", s) for s in self.statements)


def _node(stmt: str):
    import pglast

    try:
        return pglast.parse_sql(stmt)[0].stmt
    except pglast.parser.ParseError as exc:
        raise MigrationError(f"cannot parse statement: {str(exc).splitlines()[0]}") from None


def _kind(node) -> str:
    """ "begin", "commit", "rollback", "no-tx" (must run outside a transaction) or "plain"."""
    from pglast import ast
    from pglast.enums import TransactionStmtKind

    if isinstance(node, ast.TransactionStmt):
        if node.kind in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
            return "begin"
        if node.kind == TransactionStmtKind.TRANS_STMT_COMMIT:
            return "commit"
        if node.kind == TransactionStmtKind.TRANS_STMT_ROLLBACK:
            return "rollback"
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "no-tx"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "no-tx"
    if isinstance(node, ast.ReindexStmt) and any(
        getattr(p, "defname", None) == "concurrently" for p in (node.params or ())
    ):
        return "no-tx"
    if isinstance(node, (ast.VacuumStmt, ast.AlterSystemStmt, ast.CreatedbStmt, ast.DropdbStmt)):
        return "no-tx"
    return "plain"


def _index_target(node) -> Optional[IndexTarget]:
    from pglast import ast

    if isinstance(node, ast.IndexStmt) and node.concurrent and node.relation is not None:
        assert node.relation.relname is not None  # the grammar requires a table name after ON
        return IndexTarget(
            node.relation.schemaname or None, node.relation.relname, node.idxname or None, bool(node.if_not_exists)
        )
    return None


def parse_units(text: str, source: str = "migration") -> list[Unit]:
    import pglast

    try:
        slices = pglast.split(text, with_parser=True, only_slices=True)
    except pglast.parser.ParseError as exc:
        raise MigrationError(f"{source}: cannot parse: {str(exc).splitlines()[0]}") from None
    units: list[Unit] = []
    group: list[str] = []
    group_line = 0
    explicit = False
    prev_end = 0

    def flush() -> None:
        nonlocal group
        if group:
            units.append(Unit(True, tuple(group), group_line))
            group = []

    for sl in slices:
        gap = text[prev_end : sl.start]
        stmt = text[sl.start : sl.stop].strip()
        prev_end = sl.stop
        line = text.count("\n", 0, sl.start) + 1
        marked = bool(_MARKER.search(gap))
        node = _node(stmt)
        kind = _kind(node)
        if kind == "rollback":
            raise MigrationError(f"{source}:{line}: ROLLBACK in a migration file is not supported")
        if kind == "begin":
            if explicit:
                raise MigrationError(f"{source}:{line}: BEGIN inside a transaction that is already open")
            flush()
            explicit, group_line = True, line
            continue
        if kind == "commit":
            if not explicit:
                raise MigrationError(f"{source}:{line}: COMMIT without BEGIN")
            flush()
            explicit = False
            continue
        if marked or kind == "no-tx":
            if explicit:
                raise MigrationError(
                    f"{source}:{line}: a statement that cannot run in a transaction is inside BEGIN ... COMMIT"
                )
            flush()
            units.append(Unit(False, (stmt,), line, _index_target(node)))
            continue
        if not group:
            group_line = line
        group.append(stmt)
    if explicit:
        raise MigrationError(f"{source}: BEGIN without COMMIT at the end of the file")
    flush()
    return units
