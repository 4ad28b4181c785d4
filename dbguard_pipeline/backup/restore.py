"""Restoring a backup: in place (the backed-up tables' rows replaced in one transaction), or into a scratch
database that is dropped afterwards (a dry run), with the row counts and checksums verified against the
manifest.

In place, one transaction: lock the tables (ACCESS EXCLUSIVE), refuse when a table is gone or its columns
changed, drop the foreign keys that reference the tables or that the tables hold (they are re-created, with
their exact definitions, before the commit, which checks every row again), disable the tables' enabled user triggers (so
no trigger rewrites a restored row or writes elsewhere; re-enabled as they were), ``TRUNCATE ONLY``, load the
rows and sequence values from the dump, and with ``verify`` recompute the counts and checksums: any difference
rolls everything back. A failure anywhere, the loss of the connection included, leaves the database as it was.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.backup import archive
from dbguard_pipeline.backup.checksum import SETTINGS, Target, apply_settings, checksum, columns, compare_columns, find
from dbguard_pipeline.backup.manifest import (
    DUMP,
    MANIFEST,
    BackupError,
    Manifest,
    TableEntry,
    read_manifest,
    sha256_file,
)
from dbguard_pipeline.backup.store import mark_verified
from dbguard_pipeline.errors import ConnectionError_, DbguardError
from dbguard_pipeline.pg.clients import client_binary
from dbguard_pipeline.pg.dsn import database_name, mask_secrets, with_database
from dbguard_pipeline.pg.scratch import scratch_database
from dbguard_pipeline.pg.session import connect, read_only_session
from dbguard_pipeline.text import escape_controls, one_line, plural, qname

Log = Callable[[str], None]
APP_NAME = "dbguard restore"


@dataclass(frozen=True)
class TableCheck:
    entry: TableEntry
    rows: int
    checksum: str
    problem: Optional[str] = None  # the table is missing or its columns changed: nothing to compare

    @property
    def ok(self) -> bool:
        return not self.problem and self.rows == self.entry.rows and self.checksum == self.entry.checksum

    def line(self) -> str:
        e = self.entry
        if self.ok:
            return f"{e.qualified}: {plural(e.rows, 'row')}, checksum identical"
        if self.problem:
            return f"{e.qualified}: MISMATCH: {self.problem}"
        parts = []
        if self.rows != e.rows:
            parts.append(f"{plural(self.rows, 'row')}, the backup has {e.rows}")
        if self.checksum != e.checksum:
            parts.append(f"checksum {self.checksum}, the backup has {e.checksum}")
        return f"{e.qualified}: MISMATCH: {'; '.join(parts)}"


@dataclass
class RestoreResult:
    path: Path
    manifest: Manifest
    database: str
    mode: str
    committed: bool
    rows_loaded: int = 0
    sequences: int = 0
    verified: bool = False
    checks: list[TableCheck] = field(default_factory=list)
    duration_s: float = 0.0
    note: Optional[str] = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        m = self.manifest
        what = f"{plural(len(m.tables), 'table')} ({plural(self.rows_loaded, 'row')})"
        name, database = escape_controls(m.name), escape_controls(self.database)
        if self.mode == "in place":
            head = (
                f"restored {what} of {name} into {database} in {self.duration_s:.2f}s"
                if self.committed
                else f"restore of {name} into {database} rolled back: nothing was changed"
            )
        else:
            head = f"restored {what} of {name} into a {self.mode} in {self.duration_s:.2f}s (dropped again)"
        out = [head]
        if self.verified:
            bad = [c for c in self.checks if not c.ok]
            out += [c.line() for c in bad]
            out.append(
                "verified: row counts and checksums identical to the manifest"
                if not bad
                else f"verification failed: {plural(len(bad), 'table')} of {len(self.checks)} differ from the manifest"
            )
        if self.note:
            out.append(self.note)
        return out


def open_backup(path: str | Path) -> tuple[Path, Manifest]:
    """The backup folder and its manifest, after checking that the dump is the one the manifest describes."""
    p = Path(path)
    folder = p.parent if p.is_file() and p.name in (MANIFEST, DUMP) else p
    if not folder.is_dir():
        raise BackupError(f"{escape_controls(str(path))}: no such backup folder")
    manifest = read_manifest(folder)
    dump = folder / DUMP
    if not dump.is_file():
        raise BackupError(f"refusing to restore {folder.name}: its dump file is missing")
    if dump.stat().st_size != manifest.dump_bytes or sha256_file(dump) != manifest.dump_sha256:
        raise BackupError(
            f"refusing to restore {folder.name}: the dump does not match the sha256 in its manifest "
            "(the file was modified or damaged)"
        )
    return folder, manifest


def _toc_list(dump: Path, manifest: Manifest, out: Path) -> None:
    """A pg_restore --use-list file holding the rows of exactly the manifest's tables, and the sequence values."""
    proc = subprocess.run([client_binary("pg_restore"), "--list", str(dump)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"cannot read the dump: {archive.tool_failure('pg_restore', proc, proc.stderr, '')}")
    wanted, found, keep = {t.oid for t in manifest.tables}, set(), []
    for line in proc.stdout.splitlines(keepends=True):
        head = line.split(b" ", 5)
        if len(head) < 6 or not head[0].endswith(b";"):
            continue
        if head[3:5] == [b"TABLE", b"DATA"] and int(head[2]) in wanted:
            found.add(int(head[2]))
            keep.append(line)
        elif head[3:5] == [b"SEQUENCE", b"SET"]:
            keep.append(line)
    if found != wanted:
        raise BackupError(f"the dump lacks the rows of {plural(len(wanted - found), 'table')} its manifest lists")
    out.write_bytes(b"".join(keep))


def _verify(conn: psycopg.Connection, manifest: Manifest) -> list[TableCheck]:
    checks = []
    for e in manifest.tables:
        t = find(conn, e.schema, e.name)
        if t is None:
            checks.append(TableCheck(e, 0, "", "the table does not exist"))
            continue
        reason = compare_columns(e.columns, columns(conn, t.oid))
        if reason:
            checks.append(TableCheck(e, 0, "", f"columns differ from the backup ({reason})"))
            continue
        rows, digest = checksum(conn, t, e.columns)
        checks.append(TableCheck(e, rows, digest))
    return checks


def _locked_targets(conn: psycopg.Connection, manifest: Manifest) -> list[Target]:
    targets = []
    for e in manifest.tables:
        t = find(conn, e.schema, e.name)
        if t is None:
            raise BackupError(f"cannot restore in place: table {e.qualified} no longer exists")
        targets.append(t)
    if targets:
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.SQL("ONLY {}").format(t.identifier) for t in targets)
            )
        )
    for e, t in zip(manifest.tables, targets, strict=True):
        reason = compare_columns(e.columns, columns(conn, t.oid))
        if reason:
            raise BackupError(
                f"cannot restore in place: the columns of {e.qualified} changed since the backup ({reason})"
            )
    return targets


# the foreign keys that reference the tables (they would block TRUNCATE) and those the tables hold (re-checking
# them once after the load is one join, not a trigger call per row)
_FKS = """
select n.nspname, r.relname, c.conname, pg_catalog.pg_get_constraintdef(c.oid),
       pg_catalog.obj_description(c.oid, 'pg_constraint')
from pg_catalog.pg_constraint c join pg_catalog.pg_class r on r.oid = c.conrelid
join pg_catalog.pg_namespace n on n.oid = r.relnamespace
where c.contype = 'f' and c.conparentid = 0 and (c.confrelid = any(%(oids)s::oid[]) or c.confrelid in (
        select a.relid from unnest(%(oids)s::oid[]) as t(oid), pg_catalog.pg_partition_ancestors(t.oid) as a(relid))
      or c.conrelid = any(%(oids)s::oid[]))
order by n.nspname, r.relname, c.conname"""

_TRIGGERS = """select t.tgrelid, t.tgname, t.tgenabled from pg_catalog.pg_trigger t
               where t.tgrelid = any(%s::oid[]) and not t.tgisinternal and t.tgenabled in ('O', 'A')
               order by t.tgrelid, t.tgname"""


def _load(conn: psycopg.Connection, dump: Path, manifest: Manifest, *, recheck_fks: bool, log: Log) -> archive.Replayed:
    """Replace the manifest's tables' rows in the current transaction (the caller commits or rolls back)."""
    targets = _locked_targets(conn, manifest)
    by_oid = {t.oid: t for t in targets}
    oids = list(by_oid)
    fks = conn.execute(_FKS, {"oids": oids}).fetchall()
    for schema, table, name, _definition, _comment in fks:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(schema, table), sql.Identifier(name))
        )
    triggers = conn.execute(_TRIGGERS, (oids,)).fetchall()
    for relid, name, _mode in triggers:
        conn.execute(
            sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(by_oid[relid].identifier, sql.Identifier(name))
        )
    log(f"dropped {plural(len(fks), 'foreign key')} for the load, disabled {plural(len(triggers), 'trigger')}")
    if targets:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.SQL("ONLY {}").format(t.identifier) for t in targets))
        )
    log(f"emptied {plural(len(targets), 'table')}")
    with tempfile.TemporaryDirectory(prefix="dbguard-restore-") as tmp:
        listing = Path(tmp) / "toc.list"
        _toc_list(dump, manifest, listing)
        done = archive.replay(dump, conn, log, use_list=listing)
    if done.rows != manifest.rows:
        raise BackupError(
            f"loaded {plural(done.rows, 'row')} but the manifest lists {manifest.rows}: nothing was changed"
        )
    for relid, name, mode in triggers:
        conn.execute(
            sql.SQL("ALTER TABLE {} ENABLE {} TRIGGER {}").format(
                by_oid[relid].identifier, sql.SQL("ALWAYS" if mode == "A" else ""), sql.Identifier(name)
            )
        )
    if recheck_fks:
        for schema, table, name, definition, comment in fks:
            shown = escape_controls(qname(schema, table))
            try:
                with conn.transaction():
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                            sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(definition)
                        )
                    )
            except psycopg.errors.ForeignKeyViolation:
                raise BackupError(
                    f"cannot restore in place: rows of {shown} would reference rows that do not exist "
                    f"(foreign key {escape_controls(name)}): restore the tables together; "
                    "nothing was changed"
                ) from None
            if comment is not None:
                conn.execute(
                    sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                        sql.Identifier(name), sql.Identifier(schema, table), sql.Literal(comment)
                    )
                )
        log(f"re-created and checked {plural(len(fks), 'foreign key')}")
    return done


def _fail(exc: psycopg.Error, dsn: str, where: str) -> DbguardError:
    text = mask_secrets(one_line(getattr(exc.diag, "message_primary", None) or str(exc) or type(exc).__name__), dsn)
    if isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
    ):
        return ConnectionError_(
            f"lost the connection to the database during the restore ({text}): "
            f"the {where} was rolled back, nothing was changed"
        )
    return BackupError(f"restore failed, nothing was changed: {text}")


@contextlib.contextmanager
def _transaction(dsn: str, lock_timeout_ms: int) -> Iterator[psycopg.Connection]:
    """A connection in one transaction; rolled back unless the caller committed, quietly when the server is gone."""
    with archive.quiet_cleanup():
        conn = connect(dsn, application_name=APP_NAME)
        try:
            # search_path: pg_get_constraintdef() then qualifies every name it prints
            conn.execute(
                "select pg_catalog.set_config('lock_timeout', %s, true),"
                " pg_catalog.set_config('statement_timeout', '0', true),"
                " pg_catalog.set_config('search_path', 'pg_catalog', true)",
                (f"{int(lock_timeout_ms)}ms",),
            )
            yield conn
        except psycopg.Error as exc:
            raise _fail(exc, dsn, "transaction") from None
        finally:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                conn.close()


def _in_place(
    dsn: str,
    folder: Path,
    m: Manifest,
    *,
    verify: bool,
    lock_timeout_ms: int,
    log: Log,
    mode: str = "in place",
    recheck_fks: bool = True,
    commit: bool = True,
) -> RestoreResult:
    result = RestoreResult(folder, m, database_name(dsn), mode, committed=False)
    with _transaction(dsn, lock_timeout_ms) as conn:
        done = _load(conn, folder / DUMP, m, recheck_fks=recheck_fks, log=log)
        result.rows_loaded, result.sequences = done.rows, done.sequences
        if verify:
            apply_settings(conn)
            result.checks, result.verified = _verify(conn, m), True
        if commit and result.ok:
            conn.commit()
            result.committed = True
    return result


def _whole(dsn: str, folder: Path, m: Manifest, log: Log) -> RestoreResult:
    """--all backups into a new empty database: pg_restore of everything, then verify."""
    name = f"dbguard_restore_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with connect(dsn, autocommit=True, application_name=APP_NAME) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise BackupError(
                f"cannot create a scratch database: {one_line(exc.diag.message_primary or exc)}"
            ) from None
        try:
            log(f"created scratch database {name}")
            archive.restore_whole(folder / DUMP, with_database(dsn, name), name)
            with read_only_session(with_database(dsn, name), statement_timeout_ms=0, settings=SETTINGS) as ro:
                checks = _verify(ro, m)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return RestoreResult(
        folder,
        m,
        name,
        "scratch database from the whole dump",
        committed=False,
        rows_loaded=sum(c.rows for c in checks),
        verified=True,
        checks=checks,
    )


def restore(
    path: str | Path,
    dsn: str,
    *,
    verify: bool = False,
    scratch: bool = False,
    log: Log = lambda _: None,
    lock_timeout_ms: int = 10_000,
) -> RestoreResult:
    """Restore the backup at ``path`` into the database at ``dsn`` (in place), or with ``scratch`` into a
    throwaway database (always verified). Refuses a backup whose dump does not match its manifest. With
    ``verify``, a difference from the manifest rolls the restore back (``result.ok`` is False)."""
    t0 = time.perf_counter()
    folder, m = open_backup(path)
    try:
        if not scratch:
            result = _in_place(dsn, folder, m, verify=verify, lock_timeout_ms=lock_timeout_ms, log=log)
        elif m.scope == "all":
            result = _whole(dsn, folder, m, log)
        else:
            with scratch_database(dsn, "auto") as (scratch_dsn, method):
                mode = (
                    "scratch copy of the database"
                    if method == "template"
                    else "scratch copy of the schema (foreign keys not checked)"
                )
                log(f"restoring into a {mode}")
                result = _in_place(
                    scratch_dsn,
                    folder,
                    m,
                    verify=True,
                    lock_timeout_ms=lock_timeout_ms,
                    log=log,
                    mode=mode,
                    recheck_fks=method == "template",
                    commit=False,
                )
    except psycopg.Error as exc:
        raise _fail(exc, dsn, "restore") from None
    result.duration_s = time.perf_counter() - t0
    if result.verified:
        result.note = mark_verified(
            folder,
            ok=result.ok,
            how=result.mode,
            database=database_name(dsn),
            tables=len(m.tables),
            rows=m.rows,
            mismatches=[c.line() for c in result.checks if not c.ok],
        )
    return result


def compare(path: str | Path, dsn: str) -> list[TableCheck]:
    """The backed-up tables as they are now, against the manifest (read-only): every check ok means the rows
    are exactly the backup's, so there is nothing to restore."""
    _folder, m = open_backup(path)
    try:
        with read_only_session(dsn, statement_timeout_ms=0, settings=SETTINGS) as ro:
            return _verify(ro, m)
    except psycopg.Error as exc:
        text = mask_secrets(one_line(getattr(exc.diag, "message_primary", None) or str(exc) or type(exc).__name__), dsn)
        raise BackupError(f"comparing the tables with the backup {m.name} failed: {text}") from None
