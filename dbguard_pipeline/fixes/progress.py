"""The ledger table of the runner and the per-step progress it records, plus the validity check of indexes
built CONCURRENTLY.

``dbguard.schema_migrations(name, checksum, applied_at, duration, applied_by, state, steps_done, steps_total,
rolled_back_at)``: one row per migration that has started. ``state`` is ``applied`` (every step done),
``partial`` (the first ``steps_done`` of ``steps_total`` steps are done) or ``rolled_back`` (applied once, then
undone by ``dbguard migrate rollback`` at ``rolled_back_at``: it may be applied again, in its old place in the
order). A transactional step writes its row in its own transaction, so the row can never disagree with what was
committed; a no-transaction step writes it right after the step. Ledgers written by older versions are upgraded
in place (``ADD COLUMN IF NOT EXISTS``, the state's CHECK constraint replaced; their rows read as applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.errors import MigrationError
from dbguard_pipeline.fixes.units import IndexTarget

LEDGER = "dbguard.schema_migrations"
CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS dbguard.schema_migrations ("
    " name text PRIMARY KEY,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " duration interval NOT NULL,"
    " applied_by text NOT NULL DEFAULT current_user,"
    " state text NOT NULL DEFAULT 'applied'"
    " CONSTRAINT schema_migrations_state_check CHECK (state IN ('applied', 'partial', 'rolled_back')),"
    " steps_done integer,"
    " steps_total integer,"
    " rolled_back_at timestamptz)"
)
UPGRADE = (
    "ALTER TABLE dbguard.schema_migrations"
    " ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'applied',"
    " ADD COLUMN IF NOT EXISTS steps_done integer,"
    " ADD COLUMN IF NOT EXISTS steps_total integer,"
    " ADD COLUMN IF NOT EXISTS rolled_back_at timestamptz"
)
# the CHECK constraints on ``state`` an older layout made (whatever their names), replaced by the current one
_STATE_CHECKS = (
    "select c.conname from pg_constraint c join pg_attribute a on a.attrelid = c.conrelid and a.attnum = any(c.conkey)"
    " where c.conrelid = 'dbguard.schema_migrations'::regclass and c.contype = 'c' and a.attname = 'state'"
)
STATE_CHECK = (
    "ALTER TABLE dbguard.schema_migrations ADD CONSTRAINT schema_migrations_state_check"
    " CHECK (state IN ('applied', 'partial', 'rolled_back'))"
)
_COLUMNS = ("state", "steps_done", "steps_total", "rolled_back_at")


@dataclass(frozen=True)
class LedgerRow:
    name: str
    checksum: str
    applied_at: datetime
    state: str = "applied"
    steps_done: Optional[int] = None
    steps_total: Optional[int] = None
    rolled_back_at: Optional[datetime] = None

    @property
    def partial(self) -> bool:
        return self.state == "partial"

    @property
    def applied(self) -> bool:
        return self.state == "applied"

    @property
    def rolled_back(self) -> bool:
        """Applied once, then undone by ``migrate rollback``: not in the database, may be applied again."""
        return self.state == "rolled_back"


def _columns(conn: psycopg.Connection) -> Optional[set[str]]:
    """The ledger's columns, or None when there is no ledger."""
    row = conn.execute("select to_regclass(%s)::oid", (LEDGER,)).fetchone()
    if row is None or row[0] is None:
        return None
    rows = conn.execute(
        "select attname from pg_attribute where attrelid = %s and attnum > 0 and not attisdropped", (row[0],)
    ).fetchall()
    return {r[0] for r in rows}


def read_ledger(conn: psycopg.Connection) -> dict[str, LedgerRow]:
    """Every row of the ledger by name (empty when there is no ledger yet); reads old layouts too."""
    cols = _columns(conn)
    if cols is None:
        return {}
    extra = "".join(f", {c}" for c in _COLUMNS if c in cols) if set(_COLUMNS[:3]) <= cols else ""
    rows = conn.execute(
        f"select name, checksum, applied_at{extra} from dbguard.schema_migrations order by name"
    ).fetchall()
    return {r[0]: LedgerRow(*r) for r in rows}


def ensure_ledger(conn: psycopg.Connection, where: str) -> None:
    """Create the ledger, or bring an old one up to the current layout (idempotent). One-line errors."""
    try:
        cols = _columns(conn)
        if cols is not None and set(_COLUMNS) <= cols:
            return
        with conn.transaction():
            if cols is None:
                row = conn.execute("select to_regnamespace('dbguard') is null").fetchone()
                assert row is not None  # a SELECT without FROM returns exactly one row
                if row[0]:
                    conn.execute("CREATE SCHEMA IF NOT EXISTS dbguard")
                conn.execute(CREATE_TABLE)
            else:
                conn.execute(UPGRADE)
                for (name,) in conn.execute(_STATE_CHECKS).fetchall():
                    conn.execute(
                        sql.SQL("ALTER TABLE dbguard.schema_migrations DROP CONSTRAINT {}").format(sql.Identifier(name))
                    )
                conn.execute(STATE_CHECK)
    except psycopg.errors.InsufficientPrivilege as exc:
        what = "create the ledger" if cols is None else "upgrade the ledger"
        raise MigrationError(
            f"cannot {what} {LEDGER} on {where}: {exc.diag.message_primary} (run as a role "
            "that may create schemas in the database, or as the ledger's owner)"
        ) from None
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot prepare the ledger {LEDGER} on {where}: {' '.join(str(exc.diag.message_primary or exc).split())}"
        ) from None


def record(conn: psycopg.Connection, name: str, checksum: str, done: int, total: int, duration: timedelta) -> None:
    """Upsert the migration's row: ``done`` of ``total`` steps (applied when they are equal)."""
    conn.execute(
        "insert into dbguard.schema_migrations (name, checksum, duration, state, steps_done, steps_total)"
        " values (%s, %s, %s, %s, %s, %s)"
        " on conflict (name) do update set checksum = excluded.checksum, duration = excluded.duration,"
        " state = excluded.state, steps_done = excluded.steps_done, steps_total = excluded.steps_total,"
        " applied_at = now(), applied_by = current_user",
        (name, checksum, duration, "applied" if done >= total else "partial", done, total),
    )


def forget(conn: psycopg.Connection, name: str) -> None:
    """The migration is not in the database (any more) after a failed apply was undone: a row that had been
    rolled back before goes back to ``rolled_back`` (so it keeps its place in the order), any other is deleted."""
    conn.execute(
        "update dbguard.schema_migrations set state = 'rolled_back', steps_done = null"
        " where name = %s and rolled_back_at is not null",
        (name,),
    )
    conn.execute(
        "delete from dbguard.schema_migrations where name = %s and rolled_back_at is null",
        (name,),
    )


def mark_rolled_back(conn: psycopg.Connection, name: str) -> None:
    """``migrate rollback`` undid the migration: its row stays, as ``rolled_back`` with the time."""
    conn.execute(
        "update dbguard.schema_migrations set state = 'rolled_back', steps_done = null, rolled_back_at = now()"
        " where name = %s",
        (name,),
    )


# --------------------------------------------------------------------------- CONCURRENTLY index builds
def _table_oid(conn: psycopg.Connection, target: IndexTarget) -> Optional[int]:
    ident = sql.Identifier(target.schema, target.table) if target.schema else sql.Identifier(target.table)
    row = conn.execute("select to_regclass(%s)::oid", (ident.as_string(conn),)).fetchone()
    return row[0] if row else None


def invalid_indexes(conn: psycopg.Connection, target: IndexTarget) -> set[tuple[str, str]]:
    """(schema, name) of the INVALID indexes on the step's table: the named one only, when the step names it."""
    oid = _table_oid(conn, target)
    if oid is None:
        return set()
    rows = conn.execute(
        "select n.nspname, c.relname from pg_index i join pg_class c on c.oid = i.indexrelid"
        " join pg_namespace n on n.oid = c.relnamespace where i.indrelid = %s and not i.indisvalid",
        (oid,),
    ).fetchall()
    found = {(r[0], r[1]) for r in rows}
    return {x for x in found if x[1] == target.name} if target.name else found


def valid_index_exists(conn: psycopg.Connection, target: IndexTarget) -> bool:
    if not target.name:
        return False
    oid = _table_oid(conn, target)
    if oid is None:
        return False
    row = conn.execute(
        "select exists (select 1 from pg_index i join pg_class c on c.oid = i.indexrelid"
        " where i.indrelid = %s and c.relname = %s and i.indisvalid)",
        (oid, target.name),
    ).fetchone()
    return bool(row and row[0])


def drop_indexes(conn: psycopg.Connection, names: set[tuple[str, str]]) -> None:
    """DROP INDEX CONCURRENTLY each (autocommit connection)."""
    for schema, name in sorted(names):
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
