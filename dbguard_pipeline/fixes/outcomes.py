"""What ``dbguard fix`` and the ``apply_approved_migrations`` job did with each migration, next to the runner's
ledger: ``dbguard.fix_outcomes``, one row per attempt.

A row is written (``started``) in its own transaction before the backup is taken and the migration applied,
given the backup's path once it is written, and completed afterwards, so an attempt whose backup failed or
whose process died still says when it started, who approved it and which backup was taken; the next run
reports it. Outcomes:

- ``applied+verified``: applied, and the live verification found nothing worse;
- ``rolled_back_on_regression``: the verification found something worse (the reason), the migration's
  rollback was applied and, when the rows differed from the backup, the backup restored;
- ``rollback_failed``: as above, but undoing it failed (the reason): the rollback file, or the restore of the
  data (refused, killed, or failing its verification; the restore is one transaction, so the rows are as the
  migration left them): a person must look;
- ``failed``: nothing got worse, but the attempt could not go through: the backup failed (nothing was
  applied), the apply failed (the runner undid it), or the verification after applying could not run (the
  migration was rolled back); the reason says how the database was left, and the next run tries again;
- ``started``: the attempt never finished (the process was killed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

import psycopg

from dbguard_pipeline.errors import MigrationError

TABLE = "dbguard.fix_outcomes"
OUTCOMES = ("started", "applied+verified", "rolled_back_on_regression", "rollback_failed", "failed")
CREATE = (
    "CREATE TABLE IF NOT EXISTS dbguard.fix_outcomes ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " name text NOT NULL,"
    " checksum text NOT NULL,"
    " outcome text NOT NULL CHECK (outcome IN ('started', 'applied+verified', 'rolled_back_on_regression',"
    " 'rollback_failed', 'failed')),"
    " reason text NOT NULL DEFAULT '',"
    " approved_by text,"
    " approved_at text,"
    " backup text,"
    " data_restored boolean,"
    " verdicts text NOT NULL DEFAULT '',"
    " started_at timestamptz NOT NULL DEFAULT now(),"
    " finished_at timestamptz,"
    " run_by text NOT NULL DEFAULT current_user,"
    " via text NOT NULL DEFAULT '')"
)


@dataclass(frozen=True)
class OutcomeRow:
    id: int
    name: str
    checksum: str
    outcome: str
    reason: str
    approved_by: Optional[str]
    backup: Optional[str]
    data_restored: Optional[bool]
    verdicts: str
    started_at: datetime
    finished_at: Optional[datetime]
    via: str

    def line(self) -> str:
        when = f"{self.started_at:%Y-%m-%d %H:%M:%S %Z}".strip()
        head = f"{self.outcome} ({when}, {self.via or 'dbguard fix'})"
        if self.outcome == "started":
            head = f"an attempt started {when} ({self.via or 'dbguard fix'}) never finished (the process was stopped)"
        return head + (f": {self.reason}" if self.reason else "")


_COLS = (
    "id, name, checksum, outcome, reason, approved_by, backup, data_restored, verdicts, started_at, finished_at, via"
)


def exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (TABLE,)).fetchone()
    return bool(row and row[0])


def ensure(conn: psycopg.Connection) -> None:
    """Create the table (and the schema) when missing; ``conn`` is autocommit."""
    try:
        with conn.transaction():
            conn.execute("CREATE SCHEMA IF NOT EXISTS dbguard")
            conn.execute(CREATE)
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot create {TABLE}: {' '.join(str(exc.diag.message_primary or exc).split())}"
        ) from None


def start(
    conn: psycopg.Connection,
    name: str,
    checksum: str,
    approved_by: Optional[str],
    approved_at: Optional[str],
    backup: Optional[str],
    via: str,
) -> int:
    with conn.transaction():
        row = conn.execute(
            "insert into dbguard.fix_outcomes (name, checksum, outcome, approved_by, approved_at, backup, via)"
            " values (%s, %s, 'started', %s, %s, %s, %s) returning id",
            (name, checksum, approved_by, approved_at, backup, via),
        ).fetchone()
    assert row is not None
    return int(row[0])


def set_backup(conn: psycopg.Connection, row_id: int, backup: str) -> None:
    """Record the backup an attempt took (the row is started before the backup, so a failed backup is recorded)."""
    with conn.transaction():
        conn.execute("update dbguard.fix_outcomes set backup = %s where id = %s", (backup, row_id))


def finish(
    conn: psycopg.Connection,
    row_id: int,
    outcome: str,
    reason: str = "",
    verdicts: str = "",
    data_restored: Optional[bool] = None,
) -> None:
    assert outcome in OUTCOMES
    with conn.transaction():
        conn.execute(
            "update dbguard.fix_outcomes set outcome = %s, reason = %s, verdicts = %s, data_restored = %s,"
            " finished_at = now() where id = %s",
            (outcome, reason, verdicts, data_restored, row_id),
        )


def forget(conn: psycopg.Connection, row_id: int) -> None:
    """Remove a started row of an attempt that turned out to have nothing to do."""
    with conn.transaction():
        conn.execute("delete from dbguard.fix_outcomes where id = %s and outcome = 'started'", (row_id,))


def latest(conn: psycopg.Connection) -> dict[str, OutcomeRow]:
    """The last attempt of each migration (empty when there is no table yet)."""
    if not exists(conn):
        return {}
    rows = conn.execute(
        f"select distinct on (name) {_COLS} from dbguard.fix_outcomes order by name, id desc"
    ).fetchall()
    return {r[1]: OutcomeRow(*r) for r in rows}


def recent(conn: psycopg.Connection, limit: int = 50) -> list[OutcomeRow]:
    """The newest attempts first."""
    if not exists(conn):
        return []
    rows = conn.execute(f"select {_COLS} from dbguard.fix_outcomes order by id desc limit %s", (limit,)).fetchall()
    return [OutcomeRow(*r) for r in rows]


def read_recent(dsn: str, limit: int = 50) -> list[OutcomeRow]:
    from dbguard_pipeline.pg.session import connect

    try:
        with connect(dsn, autocommit=True) as conn:
            return recent(conn, limit)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot read {TABLE}: {' '.join(str(exc.diag.message_primary or exc).split())}") from None
