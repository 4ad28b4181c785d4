"""Proving a write without writing it: the NOT NULL column a write probe sets to NULL.

PostgreSQL's executor (``nodeModifyTable.c``: ``ExecInsert``, ``ExecUpdateAct``) checks a new row against the
row level security WITH CHECK options (``ExecWithCheckOptions``) before ``ExecConstraints`` (NOT NULL first,
then CHECK), and both before the heap tuple and its index entries are written. So a probe row whose one NOT NULL
column is NULL fails with 42501 when the policies refuse it, and with 23502 ``not_null_violation`` naming that
column and the table when they admit it: the leak is proven and nothing is written (a rolled-back write still
leaves its tuple behind, and extends the relation when its last page is full).

The column is chosen only where that reading is sure; otherwise the probe keeps its real write:

- a plain table (not partitioned, not a partition: routing and the partition constraint come first and name
  the partition), with no user trigger on INSERT or UPDATE and no rule (a trigger could fill the column, or be
  the isolation itself);
- NOT NULL, not identity or generated, not of a domain type (a domain's NOT NULL is checked before the policies);
- not a column that decides the row's tenant or holds the acting user, not in a foreign key;
- named by no policy expression of the table, in any command (a whole-row reference, or an expression that does
  not parse, names them all);
- one the application role may write (a column privilege refused would read as "held");
- for the UPDATE probes, which rewrite the columns that decide the row's tenant: no constraint a real UPDATE
  could then fail (checked after the policies, it would have made the write fail where the NULL reads as a
  leak): no key, exclusion or CHECK constraint on those columns, and no foreign key mixing them with others
  (a foreign key wholly on them gets an existing tenant's key, or the values of an existing row of the tenant).

A 23502 that names another column or relation, and any other error, is not read: the real write runs instead
(``Attempt.fallback``) and is judged as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from pglast import ast
from psycopg import sql

from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.policy.parse import policy_expressions, walk
from dbguard_pipeline.text import ident

if TYPE_CHECKING:
    from dbguard_pipeline.probe.session import Outcome, Session

NOT_NULL_VIOLATION = "23502"


@dataclass(frozen=True)
class Unwritten:
    """The column an attempt sets to NULL, and how its 23502 is recognised."""

    schema: str
    table: str
    column: str

    def admitted(self, out: Outcome) -> bool:
        """The policies admitted the row: it failed only on this column's NOT NULL, in this table."""
        if out.error is None or out.sqlstate != NOT_NULL_VIOLATION:
            return False
        diag = out.error.diag
        return (diag.column_name, diag.table_name, diag.schema_name) == (self.column, self.table, self.schema)

    @property
    def note(self) -> str:
        return (
            f"; it failed only on the NOT NULL column {ident(self.column)}, which the probe sets to NULL so that "
            f"PostgreSQL stops after the policies and writes nothing"
        )


def policy_columns(table: Table) -> Optional[set[str]]:
    """Every name a policy expression of ``table`` uses as a column (in any command, subqueries included);
    None when they may read any column (a whole-row reference, ``*``, or an expression that does not parse)."""
    names: set[str] = set()
    for node in policy_expressions(table.policies):
        if node is None:
            return None
        for n in walk(node):
            if not isinstance(n, ast.ColumnRef):
                continue
            fields = n.fields or ()
            if any(isinstance(f, ast.A_Star) for f in fields):
                return None
            parts = [str(f.sval) for f in fields if isinstance(f, ast.String)]
            if len(parts) == 1 and parts[0] == table.name:
                return None  # the whole row, passed to a function
            names.update(parts)
    return names


def safe_to_rewrite(table: Table, assigned: frozenset[str]) -> bool:
    """No constraint of ``table`` checked after the policies could refuse an UPDATE that rewrites ``assigned``
    (the columns that decide the row's tenant) to another tenant's values."""
    for c in table.constraints:
        cols = set(c.columns)
        if c.kind == "foreign_key":
            if cols & assigned and not cols <= assigned:
                return False
        elif c.kind == "check" and not cols:
            return False  # columns unknown: it may read any
        elif cols & assigned:
            return False
    return True


def unwritten_column(
    session: Session,
    table: Table,
    command: str,
    skip: frozenset[str] = frozenset(),
    *,
    assigned: Optional[frozenset[str]] = None,
) -> Optional[Unwritten]:
    """The column a probe of ``command`` (INSERT or UPDATE) on ``table`` may set to NULL (None: write for real).
    ``skip``: columns never chosen; ``assigned``: the columns an UPDATE probe rewrites (see :func:`safe_to_rewrite`)."""
    if table.kind != "table" or table.parent or table.qualified in session.write_hooks:
        return None
    if assigned is not None and not safe_to_rewrite(table, assigned):
        return None
    used = policy_columns(table)
    if used is None:
        return None
    fk_cols = {c for fk in table.foreign_keys for c in fk.columns}
    keys = {c for k in table.constraints if k.kind in ("primary_key", "unique", "exclusion") for c in k.columns}
    for col in sorted(table.columns, key=lambda c: (c.name in keys, c.position)):  # a key column last
        if (
            not col.not_null
            or col.identity
            or col.generated
            or col.type in session.domain_base
            or col.name in skip
            or col.name in fk_cols
            or col.name in used
        ):
            continue
        allowed = session.scalar(
            sql.SQL("SELECT has_column_privilege({}, {}::regclass, {}, {})").format(
                sql.Literal(session.role),
                sql.Literal(sql.Identifier(table.schema, table.name).as_string(session.conn)),
                sql.Literal(col.name),
                sql.Literal(command),
            )
        )
        return Unwritten(table.schema, table.name, col.name) if allowed else None
    return None
