"""Taking a backup: one folder per run, written under a temporary name and renamed when complete.

One connection opens a READ ONLY REPEATABLE READ transaction and exports its snapshot; the row counts and
checksums are computed in that transaction and ``pg_dump --snapshot`` dumps the same snapshot, so the
manifest describes exactly the rows in the dump, whatever is written to the tables meanwhile.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Optional

import psycopg

from dbguard_pipeline import __version__
from dbguard_pipeline.backup import archive
from dbguard_pipeline.backup.checksum import SETTINGS, TableName, Target, all_tables, entry, find, one, resolve
from dbguard_pipeline.backup.manifest import (
    DUMP,
    MANIFEST,
    PARTIAL_PREFIX,
    BackupError,
    Manifest,
    folder_name,
    fsync_dir,
    iso,
    sha256_file,
    write_json,
)
from dbguard_pipeline.errors import ConnectionError_, DbguardError, NotFoundError
from dbguard_pipeline.pg.dsn import mask_secrets
from dbguard_pipeline.pg.session import connect, read_only_session
from dbguard_pipeline.text import one_line, plural


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest: Manifest
    pruned: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        m = self.manifest
        return (
            f"backup {m.name}: {plural(len(m.tables), 'table')}, {plural(m.rows, 'row')}, "
            f"{human_bytes(m.dump_bytes)} in {m.duration_s:.2f}s -> {self.path}"
        )


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _database_error(exc: psycopg.Error, dsn: str, during: str) -> DbguardError:
    text = mask_secrets(one_line(getattr(exc.diag, "message_primary", None) or str(exc) or type(exc).__name__), dsn)
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.LockNotAvailable):
        return ConnectionError_(f"lost the connection to the database during {during}: {text}")
    return BackupError(f"{during} failed: {text}")


def _alive(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("select 1")
    except psycopg.OperationalError:
        return False
    return True


def _resolve_targets(conn: psycopg.Connection, tables: Optional[Sequence[TableName]], dsn: str) -> list[Target]:
    if tables is None:
        return []
    if not tables:
        raise BackupError("no tables to back up (name them, or back up the whole database)")
    try:
        with conn.transaction():
            return resolve(conn, tables)
    except psycopg.Error as exc:
        raise _database_error(exc, dsn, "resolving the table names") from None


def take(
    dsn: str,
    tables: Optional[Sequence[TableName]] = None,
    *,
    out_dir: str | Path,
    label: str = "",
    log: Callable[[str], None] = lambda _: None,
    lock_timeout_ms: int = 10_000,
) -> Backup:
    """Back up ``tables`` (SQL names or (schema, name) pairs; None: every table of the database) into a new
    folder inside ``out_dir``. Raises a one-line DbguardError when anything fails; then no folder is left."""
    with archive.quiet_cleanup():
        return _take(dsn, tables, Path(out_dir), label, log, lock_timeout_ms)


def _take(
    dsn: str,
    tables: Optional[Sequence[TableName]],
    root: Path,
    label: str,
    log: Callable[[str], None],
    lock_timeout_ms: int,
) -> Backup:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {root}: {exc.strerror or exc}") from None
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    partial: Optional[Path] = None
    try:
        with connect(dsn, application_name=archive.APP_NAME) as conn:
            targets = _resolve_targets(conn, tables, dsn)
            with read_only_session(
                conn, statement_timeout_ms=0, lock_timeout_ms=lock_timeout_ms, settings=SETTINGS, snapshot="export"
            ) as ro:
                snapshot, database, version = one(
                    ro.execute(
                        "select pg_catalog.pg_export_snapshot(), pg_catalog.current_database(),"
                        " pg_catalog.current_setting('server_version')"
                    )
                )
                if tables is None:
                    targets = all_tables(ro)
                else:  # dropped or replaced since the names were resolved?
                    for t in targets:
                        now = find(ro, t.schema, t.name)
                        if now is None or now.oid != t.oid:
                            raise NotFoundError(f"table {t.qualified} was dropped or replaced during the backup")
                entries = []
                for t in targets:
                    e = entry(ro, t)
                    entries.append(e)
                    log(f"counted {e.qualified}: {plural(e.rows, 'row')}, checksum {e.checksum}")
                name = folder_name(started, database, label)
                partial = root / f"{PARTIAL_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
                partial.mkdir()
                log(f"dumping {plural(len(targets), 'table')} with pg_dump at snapshot {snapshot}")
                try:
                    archive.dump(
                        dsn,
                        partial / DUMP,
                        snapshot=snapshot,
                        targets=None if tables is None else targets,
                        lock_wait_ms=lock_timeout_ms,
                    )
                except BackupError:
                    if not _alive(ro):
                        raise ConnectionError_(
                            "lost the connection to the database during the backup (pg_dump could not use its snapshot)"
                        ) from None
                    raise
        manifest = Manifest(
            name=name,
            label=label,
            database=database,
            server_version=version,
            created_at=iso(started),
            scope="all" if tables is None else "tables",
            tables=tuple(entries),
            dump_sha256=sha256_file(partial / DUMP),
            dump_bytes=(partial / DUMP).stat().st_size,
            pg_dump_version=archive.tool_version("pg_dump"),
            dbguard_version=__version__,
            duration_s=time.perf_counter() - t0,
        )
        write_json(partial / MANIFEST, manifest.to_json())
        final = _free_name(root, name)
        partial.rename(final)
        partial = None
        fsync_dir(root)
        log(f"wrote {final}")
        return Backup(final, manifest)
    except OSError as exc:
        raise BackupError(f"cannot write the backup in {root}: {exc.strerror or exc}") from None
    except psycopg.Error as exc:
        raise _database_error(exc, dsn, "the backup") from None
    finally:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)


def _free_name(root: Path, name: str) -> Path:
    candidate, n = root / name, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate
