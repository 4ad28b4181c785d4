"""The backup folder (``--out-dir``): listing, verification marks, retention.

Only folders with a readable manifest count as backups. A folder being written is named ``.partial-*`` and
is never listed; one left behind by a killed process is removed by ``prune`` once nothing in it changed for
a day. Retention is per database: keep the newest N and/or those younger than D days, and never delete the
newest backup whose restore was verified.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Optional

from dbguard_pipeline.backup.manifest import (
    DUMP,
    PARTIAL_PREFIX,
    VERIFICATION,
    BackupError,
    Manifest,
    iso,
    read_manifest,
    read_verification,
    write_json,
)

STALE_PARTIAL_S = 24 * 3600


@dataclass(frozen=True)
class Listed:
    path: Path
    manifest: Optional[Manifest]
    problem: Optional[str] = None
    verification: Optional[dict[str, Any]] = None

    @property
    def verified(self) -> Optional[bool]:
        """True: a restore of it was verified; False: a verification failed; None: never verified."""
        return None if self.verification is None else bool(self.verification.get("ok"))

    @property
    def status(self) -> str:
        if self.problem:
            return f"INVALID: {self.problem}"
        return {True: "verified", False: "VERIFICATION FAILED", None: "not verified"}[self.verified]

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.path.name,
            "path": str(self.path),
            "status": self.status,
            "verified": self.verified,
            "problem": self.problem,
            "verification": self.verification,
            **(
                {
                    "database": m.database,
                    "created_at": m.created_at,
                    "label": m.label,
                    "scope": m.scope,
                    "tables": [{"schema": t.schema, "name": t.name, "rows": t.rows} for t in m.tables],
                    "rows": m.rows,
                    "bytes": m.dump_bytes,
                }
                if m
                else {}
            ),
        }


def _folder(out_dir: str | Path) -> Path:
    root = Path(out_dir)
    if not root.is_dir():
        raise BackupError(f"{root} is not a folder of backups (it does not exist)")
    return root


def list_backups(out_dir: str | Path) -> list[Listed]:
    """Every backup folder in out_dir, newest first; folders that are not valid backups last."""
    good, bad = [], []
    for child in sorted(_folder(out_dir).iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            m = read_manifest(child)
        except BackupError as exc:
            bad.append(Listed(child, None, str(exc)))
            continue
        dump = child / DUMP
        problem = None
        if not dump.is_file():
            problem = "the dump file is missing"
        elif dump.stat().st_size != m.dump_bytes:
            problem = f"the dump file has {dump.stat().st_size} bytes, the manifest says {m.dump_bytes}"
        good.append(Listed(child, m, problem, read_verification(child)))
    good.sort(
        key=lambda b: (b.manifest.created if b.manifest else datetime.min.replace(tzinfo=UTC), b.path.name),
        reverse=True,
    )
    return good + bad


def mark_verified(
    folder: Path, *, ok: bool, how: str, database: str, tables: int, rows: int, mismatches: list[str]
) -> Optional[str]:
    """Record the outcome of a verified restore next to the manifest; returns a note when it cannot."""
    try:
        write_json(
            folder / VERIFICATION,
            {
                "ok": ok,
                "verified_at": iso(datetime.now(UTC)),
                "how": how,
                "database": database,
                "tables": tables,
                "rows": rows,
                "mismatches": mismatches,
            },
        )
    except OSError as exc:
        return f"could not record the verification in {folder}: {exc.strerror or exc}"
    return None


def _remove(path: Path) -> None:
    """Rename first (the folder stops looking like a backup at once), then delete."""
    doomed = path.with_name(f"{PARTIAL_PREFIX}deleting-{path.name}-{uuid.uuid4().hex[:6]}")
    path.rename(doomed)
    shutil.rmtree(doomed)


def _stale(partial: Path, now: float) -> bool:
    newest = max((p.stat().st_mtime for p in partial.rglob("*")), default=partial.stat().st_mtime)
    return now - max(newest, partial.stat().st_mtime) > STALE_PARTIAL_S


def prune(
    out_dir: str | Path,
    *,
    keep: Optional[int] = None,
    keep_days: Optional[float] = None,
    database: Optional[str] = None,
    now: Optional[datetime] = None,
    dry_run: bool = False,
) -> list[Path]:
    """Delete backups beyond the retention (per database, or only ``database``'s); returns what was (or would
    be) deleted. A backup survives when it is among the newest ``keep``, younger than ``keep_days``, or the
    newest verified one of its database. Invalid folders are left alone."""
    if keep is None and keep_days is None:
        raise BackupError("say how many backups to keep (--keep N) and/or for how long (--keep-days D)")
    if (keep is not None and keep < 1) or (keep_days is not None and keep_days < 0):
        raise BackupError("--keep must be 1 or more and --keep-days 0 or more")
    now = now or datetime.now(UTC)
    by_db: dict[str, list[Listed]] = {}
    for b in list_backups(out_dir):
        if b.manifest is not None and (database is None or b.manifest.database == database):
            by_db.setdefault(b.manifest.database, []).append(b)
    doomed = []
    for backups in by_db.values():  # newest first
        protected = next((b.path for b in backups if b.verified and not b.problem), None)
        for i, b in enumerate(backups):
            assert b.manifest is not None
            kept_by_count = keep is not None and i < keep
            kept_by_age = keep_days is not None and now - b.manifest.created < timedelta(days=keep_days)
            if not (kept_by_count or kept_by_age or b.path == protected):
                doomed.append(b.path)
    if not dry_run:
        try:
            for path in doomed:
                _remove(path)
            t = time.time()
            for partial in Path(out_dir).glob(f"{PARTIAL_PREFIX}*"):
                if partial.is_dir() and _stale(partial, t):
                    shutil.rmtree(partial, ignore_errors=True)
        except OSError as exc:
            raise BackupError(f"cannot delete an old backup in {out_dir}: {exc.strerror or exc}") from None
    return doomed
