"""Which tables a backup holds, their columns, and the row count and checksum of each, computed in SQL.

The checksum is order-independent: every row is turned into text (``row(c1, c2, ...)::text``, the columns in
the manifest's order) and hashed with md5; the two 64-bit halves of the hashes are summed separately (as
``numeric``, so nothing overflows) and each sum is taken modulo 2^64. A sum, not an XOR: two identical rows
do not cancel out. The text of a value depends on a few settings (time zone, date and interval style, float
digits, bytea output), which are pinned for the transaction, so the same rows give the same checksum on any
connection. Row security is off: if it would hide rows from this role, PostgreSQL refuses instead of
counting a subset (as pg_dump does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import psycopg
from psycopg import sql

from dbguard_pipeline.backup.manifest import BackupError, Column, TableEntry
from dbguard_pipeline.errors import NotFoundError
from dbguard_pipeline.text import escape_controls, qname

# transaction-local settings under which row text is compared (read_only_session(settings=...) or SET LOCAL)
SETTINGS: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "row_security": "off",
}

TableName = Union[str, tuple[str, str]]


@dataclass(frozen=True)
class Target:
    oid: int
    schema: str
    name: str

    @property
    def qualified(self) -> str:
        return escape_controls(qname(self.schema, self.name))

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


_KIND = {
    "p": "a partitioned table",
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "a partitioned index",
    "c": "a composite type",
    "t": "a TOAST table",
}

_BY_OID = """select c.oid, n.nspname, c.relname, c.relkind, c.relpersistence
             from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = %s"""
_BY_NAME = """select c.oid, n.nspname, c.relname, c.relkind, c.relpersistence
              from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
              where n.nspname = %s and c.relname = %s"""
_ALL = """select c.oid, n.nspname, c.relname from pg_catalog.pg_class c
          join pg_catalog.pg_namespace n on n.oid = c.relnamespace
          where c.relkind = 'r' and c.relpersistence <> 't'
            and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%%'
            and not exists (select 1 from pg_catalog.pg_depend d where d.classid = 'pg_catalog.pg_class'::regclass
                            and d.objid = c.oid and d.deptype = 'e')
          order by n.nspname, c.relname"""


def one(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row a query returns."""
    row = cur.fetchone()
    assert row is not None
    return tuple(row)


def _check_kind(row: tuple[Any, ...], shown: str) -> Target:
    oid, schema, name, kind, persistence = row
    if kind != "r":
        raise BackupError(
            f"{shown} is {_KIND.get(kind, 'not a table')}: a backup holds the rows of ordinary tables"
            + (" (name its partitions)" if kind == "p" else "")
        )
    if schema.startswith("pg_") or schema == "information_schema":
        raise BackupError(f"{shown} is a system table")
    if persistence == "t":
        raise BackupError(f"{shown} is a temporary table")
    return Target(int(oid), str(schema), str(name))


def resolve(conn: psycopg.Connection, tables: Sequence[TableName]) -> list[Target]:
    """Tables named as SQL text (``public.t``, ``"My Table"``, resolved on the role's search_path) or as
    ``(schema, name)`` pairs; each exactly once, in the order given. Must run before the search_path is
    pinned (the caller's own transaction)."""
    seen: dict[int, Target] = {}
    for t in tables:
        if isinstance(t, tuple):
            shown = escape_controls(qname(*t))
            row = conn.execute(_BY_NAME, t).fetchone()
        else:
            shown = escape_controls(t)
            if not t.strip():
                raise BackupError("an empty table name")
            try:
                with conn.transaction():
                    oid = one(conn.execute("select pg_catalog.to_regclass(%s)::oid", (t,)))[0]
            except (
                psycopg.ProgrammingError,
                psycopg.NotSupportedError,
                psycopg.DataError,
            ) as exc:  # "a.b.c.d", "db.schema.table"
                raise BackupError(f"bad table name {shown}: {exc.diag.message_primary}") from None
            row = conn.execute(_BY_OID, (oid,)).fetchone() if oid else None
        if row is None:
            raise NotFoundError(f"table {shown} does not exist")
        target = _check_kind(row, shown)
        seen.setdefault(target.oid, target)
    return list(seen.values())


def all_tables(conn: psycopg.Connection) -> list[Target]:
    """Every ordinary table pg_dump writes the rows of (no system or extension tables)."""
    return [Target(int(oid), str(s), str(n)) for oid, s, n in conn.execute(_ALL).fetchall()]


def find(conn: psycopg.Connection, schema: str, name: str) -> Optional[Target]:
    row = conn.execute(_BY_NAME, (schema, name)).fetchone()
    return _check_kind(row, escape_controls(qname(schema, name))) if row else None


def columns(conn: psycopg.Connection, oid: int) -> tuple[Column, ...]:
    rows = conn.execute(
        """select attname, pg_catalog.format_type(atttypid, atttypmod) from pg_catalog.pg_attribute
                           where attrelid = %s and attnum > 0 and not attisdropped order by attnum""",
        (oid,),
    )
    return tuple(Column(str(n), str(t)) for n, t in rows.fetchall())


def checksum(conn: psycopg.Connection, target: Target, cols: Sequence[Column]) -> tuple[int, str]:
    """(row count, checksum) of the table's own rows (ONLY: not its inheritance children), as pg_dump sees them.
    The caller's transaction has SETTINGS applied."""
    row = sql.SQL("row({})").format(sql.SQL(", ").join(sql.Identifier("t", c.name) for c in cols))
    query = sql.SQL(
        "select count(*), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text,"
        " coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text"
        " from (select pg_catalog.md5({row}::text) as h from only {table} as t) as s"
    ).format(row=row, table=target.identifier)
    count, high, low = one(conn.execute(query))
    return int(count), f"{int(high) % (1 << 64):016x}{int(low) % (1 << 64):016x}"


def entry(conn: psycopg.Connection, target: Target) -> TableEntry:
    cols = columns(conn, target.oid)
    rows, digest = checksum(conn, target, cols)
    return TableEntry(target.schema, target.name, rows, digest, cols, target.oid)


def apply_settings(conn: psycopg.Connection) -> None:
    """SETTINGS for the rest of the current transaction (restore: the writing transaction)."""
    conn.execute(
        "select " + ", ".join(["pg_catalog.set_config(%s, %s, true)"] * len(SETTINGS)),
        [v for kv in SETTINGS.items() for v in kv],
    )


def compare_columns(recorded: Sequence[Column], current: Sequence[Column]) -> Optional[str]:
    """None when the table still has the recorded columns (same names and types; order does not matter),
    else the reason in a few words."""
    a, b = {c.name: c.type for c in recorded}, {c.name: c.type for c in current}
    if a == b:
        return None
    parts = []
    if gone := [n for n in a if n not in b]:
        parts.append("removed " + ", ".join(escape_controls(n) for n in gone))
    if new := [n for n in b if n not in a]:
        parts.append("added " + ", ".join(escape_controls(n) for n in new))
    parts += [f"{escape_controls(n)} {a[n]} -> {b[n]}" for n in a if n in b and a[n] != b[n]]
    return "; ".join(parts)
