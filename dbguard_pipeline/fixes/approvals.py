"""Approval records for migrations, GitOps style: one JSON file per approved migration in
``<migrations folder>/approvals/<name>.json``, committed through review next to the migration it approves.

A record says who approved (``--by``, else ``git config user.name``, else the login name), when, and the
sha256 checksums of the forward and the rollback file, computed as the runner's ledger computes them
(:func:`dbguard_pipeline.fixes.ledger.checksum`: CRLF -> LF, one trailing newline). A changed forward or
rollback file no longer matches its record: the approval is void and the migration is refused with a
one-line reason until someone approves the new text. Nothing here needs a database.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.ledger import MigrationFile, checksum, find_migration
from dbguard_pipeline.text import escape_controls

APPROVALS = "approvals"
FORMAT = 1
REJECTED_MARK = "-- REJECTED (do not apply)"


@dataclass(frozen=True)
class Approval:
    name: str
    checksum: str
    rollback_checksum: Optional[str]
    by: str
    at: str  # ISO 8601, UTC

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT,
            "migration": self.name,
            "checksum": self.checksum,
            "rollback_checksum": self.rollback_checksum,
            "approved_by": self.by,
            "approved_at": self.at,
        }


def approvals_dir(directory: str | Path) -> Path:
    return Path(directory) / APPROVALS


def approver(by: Optional[str] = None, cwd: Optional[str | Path] = None) -> str:
    """--by, else git's user.name (of the migrations folder's repository), else the login name."""
    if by is not None:
        if not by.strip() or any(ord(ch) < 32 for ch in by):
            raise DbguardError("--by must be a non-empty name on one line")
        return by.strip()
    try:
        proc = subprocess.run(
            ["git", "config", "user.name"],
            capture_output=True,
            text=True,
            cwd=str(cwd) if cwd and Path(cwd).is_dir() else None,
            timeout=10,
            check=False,
        )
        name = proc.stdout.strip() if proc.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        name = ""
    if not name:
        name = os.environ.get("USER") or ""
    if not name:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):
            name = ""
    if not name:
        raise DbguardError("cannot tell who approves: pass --by NAME")
    return name


def rejected_reason(f: MigrationFile) -> Optional[str]:
    """The REJECTED line the round trip wrote into the file's header, if any."""
    for line in f.text().splitlines():
        if line.startswith(REJECTED_MARK):
            return line[len(REJECTED_MARK) :].lstrip(": ").strip() or "rejected by the round trip"
        if line.strip() and not line.startswith("--"):
            break
    return None


def approve(directory: str | Path, names: list[str], by: str) -> list[Approval]:
    """Write (or replace) the approval record of each named migration. Refuses, before writing any, a name
    that is not a migration of the folder and a file the round trip rejected."""
    files = [find_migration(directory, n) for n in names]
    for f in files:
        why = rejected_reason(f)
        if why:
            raise DbguardError(
                f"{f.name} was rejected by the round trip ({escape_controls(why)}): it cannot be approved"
            )
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    folder = approvals_dir(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DbguardError(f"cannot create {folder}: {exc.strerror or exc}") from None
    for f in files:
        a = Approval(f.name, f.checksum, checksum(f.rollback_path) if f.rollback_path else None, by, at)
        _write(folder / f"{f.name}.json", a.to_json())
        out.append(a)
    return out


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise DbguardError(f"cannot write {path}: {exc.strerror or exc}") from None


def read(directory: str | Path, name: str) -> tuple[Optional[Approval], str]:
    """(the record, "") or (None, why there is no usable record)."""
    path = approvals_dir(directory) / f"{name}.json"
    if not path.exists():
        return None, "not approved"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict) or d.get("migration") != name:
            return None, f"its approval file {path.name} names another migration"
        if int(d.get("format_version", 1)) > FORMAT:
            return None, f"its approval file {path.name} has a newer format_version ({d['format_version']})"
        return (
            Approval(
                name,
                str(d["checksum"]),
                None if d.get("rollback_checksum") is None else str(d["rollback_checksum"]),
                str(d["approved_by"]),
                str(d["approved_at"]),
            ),
            "",
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        return None, f"its approval file {path.name} cannot be read ({exc.__class__.__name__})"


def check(directory: str | Path, f: MigrationFile) -> tuple[Optional[Approval], str]:
    """(the valid approval, "") or (None, the one-line reason the migration is not approved)."""
    a, why = read(directory, f.name)
    if a is None:
        return None, why
    if not f.matches(a.checksum):
        return None, (
            f"approved by {escape_controls(a.by)} at {a.at} for checksum {a.checksum[:12]}, but the file now has "
            f"{f.checksum[:12]}: the approval is void, review and approve it again"
        )
    rb = checksum(f.rollback_path) if f.rollback_path else None
    if a.rollback_checksum != rb:
        now = rb[:12] if rb else "none (the file is gone)"
        return None, (
            f"approved by {escape_controls(a.by)} at {a.at}, but its rollback file changed since (checksum "
            f"{(a.rollback_checksum or 'none')[:12]} -> {now}): the approval is void, review and approve it again"
        )
    return a, ""


def gate(directory: str | Path):
    """The runner's gate for ``require_approval: true``: a reason for every pending file without a valid
    approval."""

    def _gate(f: MigrationFile) -> Optional[str]:
        _a, why = check(directory, f)
        if not why:
            return None
        return (
            f"{f.name} is {why if why == 'not approved' else 'not approved: ' + why} and the config has "
            f"require_approval: true (approve it with dbguard fix --approve {f.name}, reviewed and committed)"
        )

    return _gate
