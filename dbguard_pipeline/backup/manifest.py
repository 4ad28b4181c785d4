"""A backup folder's manifest (``manifest.json``): what was backed up, when, from which database, and the
numbers a restore is verified against. No database access here.

A backup folder holds ``dump.pgdump`` (pg_dump custom format), ``manifest.json`` and, once a restore verified
it, ``verification.json``. The manifest names the database, never the URL: no host, user or password.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.text import escape_controls, qname

FORMAT = "dbguard-backup"
FORMAT_VERSION = 1
CHECKSUM_ALGORITHM = "md5-row-sum-v1"  # see backup/checksum.py
MANIFEST = "manifest.json"
DUMP = "dump.pgdump"
VERIFICATION = "verification.json"
PARTIAL_PREFIX = ".partial-"  # a folder being written; renamed to its final name when complete


class BackupError(DbguardError):
    """A backup cannot be taken, read or restored (one line, exit code 2)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class TableEntry:
    schema: str
    name: str
    rows: int
    checksum: str
    columns: tuple[Column, ...] = ()
    oid: int = 0  # in the backed-up database: how the dump's table of contents names the table's rows

    @property
    def qualified(self) -> str:
        """For people: quoted when needed, control characters escaped."""
        return escape_controls(qname(self.schema, self.name))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "rows": self.rows,
            "checksum": self.checksum,
            "columns": [[c.name, c.type] for c in self.columns],
            "oid": self.oid,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TableEntry:
        return cls(
            str(d["schema"]),
            str(d["name"]),
            int(d["rows"]),
            str(d["checksum"]),
            tuple(Column(str(n), str(t)) for n, t in d["columns"]),
            int(d["oid"]),
        )


@dataclass(frozen=True)
class Manifest:
    name: str
    label: str
    database: str
    server_version: str
    created_at: str  # ISO 8601, UTC
    scope: str  # "tables" (named with --table) or "all"
    tables: tuple[TableEntry, ...]
    dump_sha256: str
    dump_bytes: int
    pg_dump_version: str
    dbguard_version: str
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dbguard_version": self.dbguard_version,
            "name": self.name,
            "label": self.label,
            "database": self.database,
            "server_version": self.server_version,
            "created_at": self.created_at,
            "scope": self.scope,
            "checksum_algorithm": CHECKSUM_ALGORITHM,
            "duration_s": round(self.duration_s, 3),
            "tables": [t.to_json() for t in self.tables],
            "dump": {
                "file": DUMP,
                "format": "custom",
                "sha256": self.dump_sha256,
                "bytes": self.dump_bytes,
                "pg_dump_version": self.pg_dump_version,
            },
            **self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise BackupError("not a dbguard backup manifest")
        if d.get("format_version") != FORMAT_VERSION:
            raise BackupError(f"unsupported backup format version {d.get('format_version')!r}")
        if d.get("checksum_algorithm") != CHECKSUM_ALGORITHM:
            raise BackupError(f"unsupported checksum algorithm {d.get('checksum_algorithm')!r}")
        dump = d["dump"]
        return cls(
            name=str(d["name"]),
            label=str(d.get("label") or ""),
            database=str(d["database"]),
            server_version=str(d["server_version"]),
            created_at=str(d["created_at"]),
            scope=str(d["scope"]),
            tables=tuple(TableEntry.from_json(t) for t in d["tables"]),
            dump_sha256=str(dump["sha256"]),
            dump_bytes=int(dump["bytes"]),
            pg_dump_version=str(dump.get("pg_dump_version", "")),
            dbguard_version=str(d.get("dbguard_version", "")),
            duration_s=float(d.get("duration_s", 0)),
        )


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{folder} is not a backup: no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"{path} is not valid JSON (line {exc.lineno})") from None
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BackupError(f"{path} is incomplete or malformed ({exc.__class__.__name__}: {exc})") from None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file durably: a temporary name, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- names and times
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_part(text: str, limit: int = 40) -> str:
    """A piece of a folder name: letters, digits, ``_ . -`` only (a hostile database name or label cannot
    escape the backup folder or hide in a listing)."""
    cleaned = _UNSAFE.sub("-", text).strip("-.")[:limit]
    return cleaned or "x"


def folder_name(when: datetime, database: str, label: str = "") -> str:
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return "_".join([stamp, safe_part(database)] + ([safe_part(label)] if label else []))


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_verification(folder: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads((folder / VERIFICATION).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
