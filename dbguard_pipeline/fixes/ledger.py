"""The migration runner: a ledger table, ordered application, checksums, no-transaction steps, automatic
rollback.

A migration file is split into statements with the PostgreSQL parser (pglast) and grouped into units:
  * ``BEGIN; ... COMMIT;`` written in the file: one transaction;
  * a statement right after the marker line ``-- dbguard:no-transaction``, or one PostgreSQL refuses to run in
    a transaction block (CREATE/DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VACUUM, ...): on its own,
    outside any transaction;
  * every other run of consecutive statements: one transaction (so a hand-written file without BEGIN/COMMIT
    is applied atomically, as a migration tool would).
When a unit fails, its transaction is rolled back. If anything had already been committed before it (an
earlier unit, or a non-transactional step that may have left work behind, such as an INVALID index), the
file's ``*_rollback.sql`` is applied, so a migration is never left half-applied.

Ledger: ``dbguard.schema_migrations(name, checksum, applied_at, duration, applied_by)``. ``up`` refuses to run
when an applied file's checksum changed or when a pending file sorts before an applied one; one runner at a
time per database (advisory lock).
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Optional

import psycopg

from dbguard_pipeline.errors import DbguardError, MigrationError
from dbguard_pipeline.fixes.sql import NO_TRANSACTION_MARKER

LEDGER_SCHEMA = "dbguard"
LEDGER_TABLE = "schema_migrations"
ADVISORY_KEY = 0x64626775  # "dbgu": one runner at a time per database
_MARKER = re.compile(r"^[ \t]*" + re.escape(NO_TRANSACTION_MARKER) + r"[ \t]*$", re.M)

LEDGER_DDL = (
    "CREATE SCHEMA IF NOT EXISTS dbguard",
    "CREATE TABLE IF NOT EXISTS dbguard.schema_migrations ("
    " name text PRIMARY KEY,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " duration interval NOT NULL,"
    " applied_by text NOT NULL DEFAULT current_user)",
)


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Unit:
    transactional: bool
    statements: tuple[str, ...]
    line: int  # line of the first statement in the file

    @property
    def changes_schema(self) -> bool:
        return any(not re.match(r"(?is)^\s*(set|reset)\b", s) for s in self.statements)


def _kind(stmt: str) -> str:
    """"begin", "commit", "rollback", "no-tx" (must run outside a transaction) or "plain"."""
    import pglast
    from pglast import ast
    from pglast.enums import TransactionStmtKind

    try:
        node = pglast.parse_sql(stmt)[0].stmt
    except pglast.parser.ParseError as exc:
        raise MigrationError(f"cannot parse statement: {str(exc).splitlines()[0]}") from None
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
            getattr(p, "defname", None) == "concurrently" for p in (node.params or ())):
        return "no-tx"
    if isinstance(node, (ast.VacuumStmt, ast.AlterSystemStmt, ast.CreatedbStmt, ast.DropdbStmt)):
        return "no-tx"
    return "plain"


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
        gap = text[prev_end:sl.start]
        stmt = text[sl.start:sl.stop].strip()
        prev_end = sl.stop
        line = text.count("\n", 0, sl.start) + 1
        marked = bool(_MARKER.search(gap))
        kind = _kind(stmt)
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
                raise MigrationError(f"{source}:{line}: a statement that cannot run in a transaction is inside "
                                     "BEGIN ... COMMIT")
            flush()
            units.append(Unit(False, (stmt,), line))
            continue
        if not group:
            group_line = line
        group.append(stmt)
    if explicit:
        raise MigrationError(f"{source}: BEGIN without COMMIT at the end of the file")
    flush()
    return units


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class MigrationFile:
    name: str  # file name without .sql
    path: Path
    checksum: str
    rollback_path: Optional[Path]

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def discover(directory: str | Path) -> list[MigrationFile]:
    d = Path(directory)
    if not d.is_dir():
        raise DbguardError(f"migrations folder not found: {d}")
    out = []
    for p in sorted(d.glob("*.sql")):
        if p.name.endswith("_rollback.sql"):
            continue
        rb = p.with_name(p.name[:-4] + "_rollback.sql")
        out.append(MigrationFile(p.name[:-4], p, checksum(p), rb if rb.is_file() else None))
    return out


def _find(directory: str | Path, name: str) -> MigrationFile:
    base = Path(name).name
    for suffix in ("_rollback.sql", ".sql"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    for f in discover(directory):
        if f.name == base:
            return f
    raise DbguardError(f"no migration named {base} in {directory}")


# --------------------------------------------------------------------------- the ledger
def read_ledger(conn: psycopg.Connection) -> dict[str, tuple[str, object]]:
    """{name: (checksum, applied_at)} of every applied migration (empty when there is no ledger yet)."""
    row = conn.execute("select to_regclass('dbguard.schema_migrations') is not null").fetchone()
    if row is None or not row[0]:
        return {}
    rows = conn.execute("select name, checksum, applied_at from dbguard.schema_migrations order by name").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def applied_names(dsn: str) -> set[str]:
    """Names in the runner's ledger (empty when there is none yet)."""
    from dbguard_pipeline.pg.session import connect

    with connect(dsn, autocommit=True) as conn:
        return set(read_ledger(conn))


# --------------------------------------------------------------------------- execution
def _pg_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    msg = getattr(diag, "message_primary", None) if diag is not None else None
    return " ".join((msg or str(exc) or exc.__class__.__name__).split())


@dataclass
class UnitFailed(Exception):
    index: int
    unit: Unit
    error: BaseException


def _run_units(conn: psycopg.Connection, units: list[Unit], *, lock_retries: int = 0,
               final: Optional[Callable[[psycopg.Connection], None]] = None,
               on_unit: Optional[Callable[[int, Unit], None]] = None) -> bool:
    """Run units in order on an autocommit connection; ``final`` runs inside the last transaction (or in its
    own one). Raises UnitFailed; returns nothing useful."""
    last_tx = max((i for i, u in enumerate(units) if u.transactional), default=-1)
    if final is not None and (last_tx == -1 or last_tx != len(units) - 1):
        units = units + [Unit(True, (), 0)]
        last_tx = len(units) - 1
    for i, unit in enumerate(units):
        if on_unit:
            on_unit(i, unit)
        attempt = 0
        while True:
            try:
                if unit.transactional:
                    with conn.transaction():
                        for s in unit.statements:
                            conn.execute(s)
                        if final is not None and i == last_tx:
                            final(conn)
                else:
                    for s in unit.statements:
                        conn.execute(s)
                break
            except psycopg.errors.LockNotAvailable as exc:
                if unit.transactional and attempt < lock_retries:
                    attempt += 1
                    time.sleep(min(0.5 * attempt, 5.0))
                    continue
                raise UnitFailed(i, unit, exc) from None
            except psycopg.Error as exc:
                raise UnitFailed(i, unit, exc) from None
            except KeyboardInterrupt as exc:  # psycopg cancelled the statement: roll back like any failure
                raise UnitFailed(i, unit, exc) from None
    return True


@dataclass
class ApplyResult:
    name: str
    status: str  # "applied" | "rolled back" | "would apply" | ...
    duration_s: float = 0.0
    units: int = 0


@dataclass
class Runner:
    dsn: str
    directory: str | Path
    lock_retries: int = 0
    log: Callable[[str], None] = field(default=lambda line: None)

    # ---------------------------------------------------------------- connection and ledger
    def _connect(self) -> psycopg.Connection:
        from dbguard_pipeline.pg.session import connect

        conn = connect(self.dsn, autocommit=True, application_name="dbguard migrate")
        row = conn.execute("select pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
        if row is None or not row[0]:
            conn.close()
            raise MigrationError("another dbguard migrate is running on this database (advisory lock held)")
        return conn

    @staticmethod
    def _ledger(conn: psycopg.Connection) -> dict[str, tuple[str, object]]:
        return read_ledger(conn)

    @staticmethod
    def _ensure_ledger(conn: psycopg.Connection) -> None:
        with conn.transaction():
            for ddl in LEDGER_DDL:
                conn.execute(ddl)

    # ---------------------------------------------------------------- status
    def status(self) -> list[tuple[str, str, str]]:
        """(state, name, detail) for every file and every ledger row without a file."""
        files = discover(self.directory)
        from dbguard_pipeline.pg.session import connect

        with connect(self.dsn, autocommit=True) as conn:
            ledger = self._ledger(conn)
        rows = []
        names = set()
        for f in files:
            names.add(f.name)
            if f.name in ledger:
                ck, at = ledger[f.name]
                state = "applied" if ck == f.checksum else "CHANGED"
                detail = f"applied {at:%Y-%m-%d %H:%M:%S %Z}".strip()
                if state == "CHANGED":
                    detail += "; the file changed after it was applied (checksum mismatch)"
                rows.append((state, f.name, detail))
            else:
                rows.append(("pending", f.name, "" if f.rollback_path else "no rollback file"))
        for name in sorted(set(ledger) - names):
            rows.append(("missing", name, "in the ledger, but its file is not in the folder"))
        return rows

    # ---------------------------------------------------------------- up
    def _check(self, files: list[MigrationFile], ledger: dict[str, tuple[str, object]]) -> list[MigrationFile]:
        for f in files:
            if f.name in ledger and ledger[f.name][0] != f.checksum:
                raise MigrationError(f"{f.name} was applied with checksum {ledger[f.name][0][:12]} but the file now has "
                                     f"{f.checksum[:12]}: applied migrations must not be edited (restore the file, "
                                     "or write a new migration)")
        pending = [f for f in files if f.name not in ledger]
        if pending and ledger:
            last_applied = max(ledger)
            early = [f.name for f in pending if f.name < last_applied]
            if early:
                raise MigrationError(f"{early[0]} sorts before the already applied {last_applied}: out-of-order "
                                     "migration (rename it with a later timestamp)")
        return pending

    def plan(self, target: Optional[str] = None) -> list[tuple[MigrationFile, list[Unit]]]:
        """What ``up`` (up to ``target``, a file name) would do, without writing anything."""
        files = discover(self.directory)
        from dbguard_pipeline.pg.session import connect

        with connect(self.dsn, autocommit=True) as conn:
            ledger = self._ledger(conn)
        pending = self._check(files, ledger)
        if target:
            pending = [f for f in pending if f.name <= target]
        return [(f, parse_units(f.text(), f.path.name)) for f in pending]

    def up(self, target: Optional[str] = None) -> list[ApplyResult]:
        files = discover(self.directory)
        # Parse everything first: a file that cannot be parsed stops the run before anything is applied.
        parsed = {f.name: parse_units(f.text(), f.path.name) for f in files}
        conn = self._connect()
        results: list[ApplyResult] = []
        try:
            ledger = self._ledger(conn)
            pending = self._check(files, ledger)
            if target:
                tgt = _find(self.directory, target).name
                pending = [f for f in pending if f.name <= tgt]
            if not pending:
                return results
            self._ensure_ledger(conn)
            for f in pending:
                results.append(self._apply(conn, f, parsed[f.name]))
        finally:
            conn.close()
        return results

    def _apply(self, conn: psycopg.Connection, f: MigrationFile, units: list[Unit]) -> ApplyResult:
        started = time.monotonic()
        self.log(f"applying {f.name} ({len(units)} steps)")

        def record(c: psycopg.Connection) -> None:
            c.execute("insert into dbguard.schema_migrations (name, checksum, duration) values (%s, %s, %s)",
                      (f.name, f.checksum, _interval(time.monotonic() - started)))

        changed = {"any": False}

        def on_unit(i: int, unit: Unit) -> None:
            if i > 0 and units[i - 1].changes_schema:
                changed["any"] = True

        try:
            _run_units(conn, units, lock_retries=self.lock_retries, final=record, on_unit=on_unit)
        except UnitFailed as failed:
            step = f"step {failed.index + 1} of {len(units)} (line {failed.unit.line})" if failed.unit.line else "the ledger update"
            reason = _pg_message(failed.error)
            needs_undo = changed["any"] or (not failed.unit.transactional and failed.unit.changes_schema)
            if not needs_undo:
                outcome = "nothing was changed (its transaction was rolled back)"
            elif f.rollback_path is None:
                outcome = "the steps before it stay applied and there is no rollback file: fix by hand"
            else:
                try:
                    self._reset_session(conn)
                    _run_units(conn, parse_units(f.rollback_path.read_text(encoding="utf-8"), f.rollback_path.name),
                               lock_retries=max(self.lock_retries, 3))
                    outcome = f"{f.rollback_path.name} was applied: the database is as it was before"
                except UnitFailed as rb:
                    outcome = (f"its rollback {f.rollback_path.name} failed too at line {rb.unit.line} "
                               f"({_pg_message(rb.error)}): fix by hand")
            raise MigrationError(f"{f.name}: {step} failed: {reason}; {outcome}") from None
        took = time.monotonic() - started
        self.log(f"applied {f.name} in {took:.2f}s")
        return ApplyResult(f.name, "applied", took, len(units))

    @staticmethod
    def _reset_session(conn: psycopg.Connection) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.execute("RESET ALL")

    # ---------------------------------------------------------------- rollback
    def rollback(self, name: str, dry_run: bool = False) -> ApplyResult:
        f = _find(self.directory, name)
        if f.rollback_path is None:
            raise MigrationError(f"{f.name} has no rollback file ({f.path.name[:-4]}_rollback.sql)")
        units = parse_units(f.rollback_path.read_text(encoding="utf-8"), f.rollback_path.name)
        if dry_run:
            from dbguard_pipeline.pg.session import connect

            with connect(self.dsn, autocommit=True) as c:
                if f.name not in self._ledger(c):
                    raise MigrationError(f"{f.name} is not applied (not in dbguard.schema_migrations)")
            return ApplyResult(f.name, "would roll back", 0.0, len(units))
        conn = self._connect()
        try:
            if f.name not in self._ledger(conn):
                raise MigrationError(f"{f.name} is not applied (not in dbguard.schema_migrations)")
            started = time.monotonic()

            def forget(c: psycopg.Connection) -> None:
                c.execute("delete from dbguard.schema_migrations where name = %s", (f.name,))

            try:
                _run_units(conn, units, lock_retries=self.lock_retries, final=forget)
            except UnitFailed as failed:
                raise MigrationError(f"rollback of {f.name} failed at line {failed.unit.line}: "
                                     f"{_pg_message(failed.error)}; the ledger still lists it as applied "
                                     "(the rollback steps are guarded: fix the cause and run it again)") from None
            return ApplyResult(f.name, "rolled back", time.monotonic() - started, len(units))
        finally:
            conn.close()


def _interval(seconds: float) -> timedelta:
    return timedelta(seconds=round(seconds, 3))


def apply_sql(dsn: str, text: str, *, source: str = "migration", lock_retries: int = 0) -> None:
    """Apply one migration text without a ledger (used by the sandbox and tests). Raises MigrationError."""
    from dbguard_pipeline.pg.session import connect

    units = parse_units(text, source)
    with connect(dsn, autocommit=True) as conn:
        try:
            _run_units(conn, units, lock_retries=lock_retries)
        except UnitFailed as failed:
            raise MigrationError(f"{source}: line {failed.unit.line} failed: {_pg_message(failed.error)}") from None
