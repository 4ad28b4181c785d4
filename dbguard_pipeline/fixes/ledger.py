"""The migration runner: a ledger with per-step progress, ordered application, checksums, no-transaction
steps, automatic rollback, resumption after a crash.

A file is split into units (steps, see :mod:`dbguard_pipeline.fixes.units`). Each step that completes is
recorded in the ledger (:mod:`dbguard_pipeline.fixes.progress`): a transactional step in its own transaction,
a no-transaction step right after it, so after any crash the ledger says how far the file got ("half-applied
at step 3 of 13") and ``up`` resumes with the next step (or ``rollback`` undoes the file).

When a step fails (an error, SIGINT/SIGTERM, a lost connection), its transaction is rolled back; the runner
reconnects when it has to, drops any INVALID index the step left behind, and when anything had already been
committed it applies the file's ``*_rollback.sql`` and deletes the row, so the database is as it was before.
When it cannot (no rollback file, the server stays down, the rollback fails), the row stays ``partial``.

After a ``CREATE INDEX CONCURRENTLY`` step the index must be valid (``pg_index.indisvalid``); an INVALID
one is dropped (``DROP INDEX CONCURRENTLY``) and the step fails.

Checksums are taken over the text with CRLF turned into LF and exactly one trailing newline; a ledger row
written with the older byte-exact checksum still matches. ``up`` refuses to run when an applied file changed
or when a pending file sorts before an applied one; one runner at a time per database (advisory lock).
``rollback`` keeps the file's ledger row as ``rolled_back``: ``up`` applies it again in its old place in the
order (not out-of-order), as long as the file is the one that was applied (same checksum); a rolled-back file
that changed since is a new migration and must sort after the applied ones.

Slightly over 500 lines: the runner class with its signal handling and checksums; the steps, units and the
ledger table itself are already split out (steps.py, units.py, progress.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Optional

import psycopg

from dbguard_pipeline.errors import DbguardError, MigrationError
from dbguard_pipeline.fixes import progress
from dbguard_pipeline.fixes.progress import LedgerRow, read_ledger
from dbguard_pipeline.fixes.units import Unit, parse_units
from dbguard_pipeline.text import escape_controls

__all__ = [
    "Runner",
    "ApplyResult",
    "MigrationFile",
    "Unit",
    "parse_units",
    "read_ledger",
    "applied_names",
    "apply_sql",
    "discover",
    "checksum",
]

ADVISORY_KEY = 0x64626775  # "dbgu": one runner at a time per database
RECONNECT_SECONDS = 30.0  # how long to wait for the server to come back before giving up the cleanup


# --------------------------------------------------------------------------- files
def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MigrationError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_text(path: Path) -> str:
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def normalised(raw: bytes) -> bytes:
    """CRLF -> LF and exactly one trailing newline: a checkout's line endings do not change a checksum."""
    return raw.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n"


def checksum(path: Path) -> str:
    return hashlib.sha256(normalised(_read_bytes(path))).hexdigest()


@dataclass(frozen=True)
class MigrationFile:
    name: str  # file name without .sql
    path: Path
    checksum: str  # of the normalised text: what new ledger rows record
    rollback_path: Optional[Path]
    exact: str = ""  # byte-exact checksum: what ledgers written before normalisation recorded

    def text(self) -> str:
        return read_text(self.path)

    def matches(self, recorded: str) -> bool:
        return recorded in (self.checksum, self.exact)


def discover(directory: str | Path) -> list[MigrationFile]:
    """The migration files of the folder, in order. An absent folder has none; an unreadable one is an error."""
    d = Path(directory)
    if not d.exists():
        return []
    if not d.is_dir():
        raise MigrationError(f"{d} is not a folder")
    try:
        names = sorted(os.listdir(d))
    except OSError as exc:
        raise MigrationError(f"cannot read the migrations folder {d}: {exc.strerror or exc}") from None
    out = []
    for n in names:
        p = d / n
        if not n.endswith(".sql") or n.endswith("_rollback.sql") or p.is_dir():
            continue
        if p.exists() and not p.is_file():
            raise MigrationError(f"{p} is not a regular file")
        raw = _read_bytes(p)
        rb = p.with_name(n[:-4] + "_rollback.sql")
        out.append(
            MigrationFile(
                n[:-4],
                p,
                hashlib.sha256(normalised(raw)).hexdigest(),
                rb if rb.is_file() else None,
                hashlib.sha256(raw).hexdigest(),
            )
        )
    return out


def find_migration(directory: str | Path, name: str) -> MigrationFile:
    """The migration a user named: its name, or the name of its file, rollback file or approval record."""
    base = Path(name).name
    for suffix in ("_rollback.sql", ".sql", ".json"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    for f in discover(directory):
        if f.name == base:
            return f
    raise DbguardError(f"no migration named {escape_controls(base)} in {escape_controls(str(directory))}")


def applied_names(dsn: str) -> set[str]:
    """Names of the fully applied migrations in the runner's ledger (empty when there is none yet)."""
    from dbguard_pipeline.pg.session import connect

    with connect(dsn, autocommit=True) as conn:
        return {n for n, r in read_ledger(conn).items() if r.applied}


# --------------------------------------------------------------------------- signals
class _Interrupts:
    """SIGTERM handled like SIGINT (KeyboardInterrupt: psycopg cancels the running statement); held back
    while the runner cleans up after a failure, so a second signal cannot interrupt the rollback."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.holding:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        was, self.holding = self.holding, True
        try:
            yield
        finally:
            self.holding = was


# --------------------------------------------------------------------------- execution
def _pg_message(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT/SIGTERM)"
    diag = getattr(exc, "diag", None)
    msg = getattr(diag, "message_primary", None) if diag is not None else None
    return " ".join((msg or str(exc) or exc.__class__.__name__).split())


@dataclass
class UnitFailed(Exception):
    index: int
    unit: Unit
    error: BaseException


def _execute(
    conn: psycopg.Connection,
    i: int,
    unit: Unit,
    lock_retries: int,
    inside: Optional[Callable[[psycopg.Connection], None]] = None,
) -> None:
    """One unit on an autocommit connection; ``inside`` runs in a transactional unit's transaction."""
    attempt = 0
    while True:
        try:
            if unit.transactional:
                with conn.transaction():
                    for s in unit.statements:
                        conn.execute(s)
                    if inside is not None:
                        inside(conn)
            else:
                for s in unit.statements:
                    conn.execute(s)
            return
        except psycopg.errors.LockNotAvailable as exc:
            if unit.transactional and attempt < lock_retries:
                attempt += 1
                time.sleep(min(0.5 * attempt, 5.0))
                continue
            raise UnitFailed(i, unit, exc) from None
        except (psycopg.Error, KeyboardInterrupt) as exc:  # psycopg cancelled the statement on an interrupt
            raise UnitFailed(i, unit, exc) from None


def _run_units(
    conn: psycopg.Connection,
    units: list[Unit],
    *,
    lock_retries: int = 0,
    final: Optional[Callable[[psycopg.Connection], None]] = None,
) -> None:
    """Run units in order; ``final`` runs inside the last transaction (or in one of its own). Raises UnitFailed."""
    if final is not None and (not units or not units[-1].transactional):
        units = units + [Unit(True, (), 0)]
    for i, unit in enumerate(units):
        _execute(conn, i, unit, lock_retries, final if (final is not None and i == len(units) - 1) else None)


@dataclass
class ApplyResult:
    name: str
    status: str  # "applied" | "rolled back" | "would apply" | ...
    duration_s: float = 0.0
    units: int = 0
    resumed_at: int = 0  # the step it resumed at (1-based), 0 when it started from the beginning


@dataclass
class Runner:
    dsn: str
    directory: str | Path
    lock_retries: int = 0
    log: Callable[[str], None] = field(default=lambda line: None)
    reconnect_s: float = RECONNECT_SECONDS
    # called for each pending file before anything is applied; a returned reason stops the run (the approval
    # gate of ``require_approval``, see :mod:`dbguard_pipeline.fixes.approvals`)
    gate: Optional[Callable[[MigrationFile], Optional[str]]] = None
    _conn: Optional[psycopg.Connection] = field(default=None, repr=False)
    _signals: _Interrupts = field(default_factory=_Interrupts, repr=False)

    # ---------------------------------------------------------------- connection
    @property
    def where(self) -> str:
        from dbguard_pipeline.pg.dsn import describe_dsn

        return describe_dsn(self.dsn)

    def _connect(self) -> psycopg.Connection:
        from dbguard_pipeline.pg.session import connect

        conn = connect(self.dsn, autocommit=True, application_name="dbguard migrate")
        try:
            row = conn.execute(
                "select pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'"
            ).fetchone()
            assert row is not None  # a SELECT without FROM returns exactly one row
            standby, read_only = row
            if standby:
                raise MigrationError(
                    f"{self.where} is a hot standby (read-only, in recovery): run migrations against the primary"
                )
            if read_only:
                raise MigrationError(
                    f"{self.where} is read-only (default_transaction_read_only is on): nothing can be applied"
                )
            row = conn.execute("select pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
            if row is None or not row[0]:
                raise MigrationError("another dbguard migrate is running on this database (advisory lock held)")
        except BaseException:
            conn.close()
            raise
        return conn

    def _reconnect(self) -> Optional[psycopg.Connection]:
        """A fresh connection after the old one broke (server restart, terminated backend); None when the
        server stays unreachable."""
        if self._conn is not None and not self._conn.broken and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("RESET ALL")
                return self._conn
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        deadline = time.monotonic() + self.reconnect_s
        while True:
            try:
                self._conn = self._connect()
                return self._conn
            except MigrationError:
                raise
            except DbguardError:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.5)

    def _ledger_row(self, name: str) -> Optional[LedgerRow]:
        assert self._conn is not None
        return read_ledger(self._conn).get(name)

    def files(self) -> list[MigrationFile]:
        return discover(self.directory)

    # ---------------------------------------------------------------- status
    def status(self) -> list[tuple[str, str, str]]:
        """(state, name, detail) for every file and every ledger row without a file. States: applied,
        CHANGED, HALF-APPLIED, pending (a rolled-back file too, said in the detail), missing."""
        files = discover(self.directory)
        from dbguard_pipeline.pg.session import connect

        with connect(self.dsn, autocommit=True) as conn:
            ledger = read_ledger(conn)
        rows = []
        for f in files:
            r = ledger.get(f.name)
            if r is None:
                rows.append(("pending", f.name, "" if f.rollback_path else "no rollback file"))
                continue
            changed = not f.matches(r.checksum)
            if r.rolled_back:
                when = f"{r.rolled_back_at:%Y-%m-%d %H:%M:%S %Z}".strip() if r.rolled_back_at else ""
                detail = f"rolled back {when}".rstrip() + ": `dbguard migrate up` applies it again"
                if changed:
                    detail += "; the file changed since (checksum mismatch): up applies it only when it sorts last"
                rows.append(("pending", f.name, detail))
                continue
            if r.partial:
                detail = (
                    f"half-applied at step {r.steps_done} of {r.steps_total} (last step recorded "
                    f"{r.applied_at:%Y-%m-%d %H:%M:%S %Z}){self._next_index(f, r)}: run `dbguard migrate up` "
                    f"to resume, or `dbguard migrate rollback {f.name}`"
                )
                if changed:
                    detail += "; the file changed since (checksum mismatch): restore it first"
                rows.append(("HALF-APPLIED", f.name, detail))
                continue
            detail = f"applied {r.applied_at:%Y-%m-%d %H:%M:%S %Z}".strip()
            if changed:
                detail += "; the file changed after it was applied (checksum mismatch)"
            rows.append(("CHANGED" if changed else "applied", f.name, detail))
        names = {f.name for f in files}
        for name in sorted(set(ledger) - names):
            r = ledger[name]
            if r.rolled_back:  # not in the database, and its file is gone: nothing is missing
                continue
            extra = f" (half-applied at step {r.steps_done} of {r.steps_total})" if r.partial else ""
            rows.append(("missing", name, f"in the ledger{extra}, but its file is not in the folder"))
        return rows

    def _next_index(self, f: MigrationFile, r: LedgerRow) -> str:
        """What became of the next step when it is a CREATE INDEX CONCURRENTLY the crash interrupted."""
        from dbguard_pipeline.pg.session import connect

        try:
            units = parse_units(f.text(), f.path.name)
        except MigrationError:
            return ""
        done = r.steps_done
        nxt = units[done].index if done is not None and done < len(units) else None
        if done is None or nxt is None or not nxt.name:  # nxt is None whenever done is
            return ""
        with connect(self.dsn, autocommit=True) as conn:
            if progress.valid_index_exists(conn, nxt):
                return (
                    f"; step {done + 1}, the index {nxt.name}, was built after the runner stopped "
                    "(up records it without building it again)"
                )
            if progress.invalid_indexes(conn, nxt):
                return (
                    f"; step {done + 1} left the index {nxt.name} INVALID (up drops and rebuilds it, rollback drops it)"
                )
        return ""

    # ---------------------------------------------------------------- up
    def _check(self, files: list[MigrationFile], ledger: dict[str, LedgerRow]) -> list[MigrationFile]:
        for f in files:
            r = ledger.get(f.name)
            if r is not None and not r.rolled_back and not f.matches(r.checksum):
                what = f"was half-applied (step {r.steps_done} of {r.steps_total})" if r.partial else "was applied"
                raise MigrationError(
                    f"{f.name} {what} with checksum {r.checksum[:12]} but the file now has "
                    f"{f.checksum[:12]}: applied migrations must not be edited (restore the file, "
                    "or write a new migration)"
                )
        pending = [f for f in files if f.name not in ledger or not ledger[f.name].applied]
        done = [n for n, r in ledger.items() if r.applied]
        if pending and done:
            last_applied = max(done)
            # A rolled-back file had its place in the order already: it may come back there unchanged.
            early = [
                f
                for f in pending
                if f.name < last_applied
                and (f.name not in ledger or (ledger[f.name].rolled_back and not f.matches(ledger[f.name].checksum)))
            ]
            if early:
                f = early[0]
                if f.name in ledger:
                    raise MigrationError(
                        f"{f.name} was rolled back and its file changed since (checksum "
                        f"{ledger[f.name].checksum[:12]}, now {f.checksum[:12]}), and it sorts before the already "
                        f"applied {last_applied}: out-of-order migration (restore the file, or write the change as "
                        "a new migration with a later timestamp)"
                    )
                raise MigrationError(
                    f"{f.name} sorts before the already applied {last_applied}: out-of-order "
                    "migration (rename it with a later timestamp)"
                )
        return pending

    def plan(self, target: Optional[str] = None) -> list[tuple[MigrationFile, list[Unit]]]:
        """What ``up`` (up to ``target``, a file name) would do, without writing anything."""
        files = discover(self.directory)
        from dbguard_pipeline.pg.session import connect

        with connect(self.dsn, autocommit=True) as conn:
            ledger = read_ledger(conn)
        pending = self._check(files, ledger)
        if target:
            pending = [f for f in pending if f.name <= target]
        return [(f, parse_units(f.text(), f.path.name)) for f in pending]

    def up(self, target: Optional[str] = None, only: Optional[Collection[str]] = None) -> list[ApplyResult]:
        """Apply the pending files in order (up to ``target``; ``only``: just these names)."""
        files = discover(self.directory)
        # Parse everything first: a file that cannot be read or parsed stops the run before anything is applied.
        parsed = {f.name: parse_units(f.text(), f.path.name) for f in files}
        results: list[ApplyResult] = []
        with self._signals.installed():
            self._conn = self._connect()
            try:
                ledger = read_ledger(self._conn)
                pending = self._check(files, ledger)
                if target:
                    tgt = find_migration(self.directory, target).name
                    pending = [f for f in pending if f.name <= tgt]
                if only is not None:
                    pending = [f for f in pending if f.name in only]
                if self.gate is not None:
                    for f in pending:
                        reason = self.gate(f)
                        if reason:
                            raise MigrationError(reason)
                if not pending:
                    return results
                progress.ensure_ledger(self._conn, self.where)
                for f in pending:
                    row = ledger.get(f.name)
                    start = (row.steps_done or 0) if row is not None and row.partial else 0
                    results.append(self._apply(f, parsed[f.name], start))
            finally:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
        return results

    def _apply(self, f: MigrationFile, units: list[Unit], start: int) -> ApplyResult:
        from dbguard_pipeline.fixes.steps import apply_file

        return apply_file(self, f, units, start)

    # ---------------------------------------------------------------- rollback
    def rollback(self, name: str, dry_run: bool = False) -> ApplyResult:
        f = find_migration(self.directory, name)
        if f.rollback_path is None:
            raise MigrationError(f"{f.name} has no rollback file ({f.path.name[:-4]}_rollback.sql)")
        units = parse_units(read_text(f.rollback_path), f.rollback_path.name)
        if dry_run:
            from dbguard_pipeline.pg.session import connect

            with connect(self.dsn, autocommit=True) as c:
                _check_rollback(f.name, read_ledger(c))
            return ApplyResult(f.name, "would roll back", 0.0, len(units))
        with self._signals.installed():
            self._conn = self._connect()
            try:
                _check_rollback(f.name, read_ledger(self._conn))
                progress.ensure_ledger(self._conn, self.where)
                started = time.monotonic()
                try:
                    _run_units(
                        self._conn,
                        units,
                        lock_retries=self.lock_retries,
                        final=lambda c: progress.mark_rolled_back(c, f.name),
                    )
                except UnitFailed as failed:
                    raise MigrationError(
                        f"rollback of {f.name} failed at line {failed.unit.line}: "
                        f"{_pg_message(failed.error)}; the ledger still lists it (the rollback "
                        "steps are guarded: fix the cause and run it again)"
                    ) from None
                return ApplyResult(f.name, "rolled back", time.monotonic() - started, len(units))
            finally:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None


def _check_rollback(name: str, ledger: dict[str, LedgerRow]) -> None:
    r = ledger.get(name)
    if r is None:
        raise MigrationError(f"{name} is not applied (not in dbguard.schema_migrations)")
    if r.rolled_back:
        when = f" at {r.rolled_back_at:%Y-%m-%d %H:%M:%S %Z}".rstrip() if r.rolled_back_at else ""
        raise MigrationError(f"{name} is not applied (it was rolled back{when})")


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
