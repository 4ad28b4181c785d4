"""Writing migration files and finding the ones already written (shared by the CLI and the Dagster job)."""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.plan import Migration, read_fixes

_TIMESTAMP = re.compile(r"^\d{14}$")


def timestamp(value: Optional[str] = None) -> str:
    if value is None:
        return datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    if not _TIMESTAMP.match(value):
        raise DbguardError(f"--timestamp must be YYYYMMDDHHMMSS, got {value!r}")
    return value


def rendered(migrations: Iterable[Migration], ts: str) -> dict[str, str]:
    """{file name: text} for the forward and rollback file of each migration."""
    out: dict[str, str] = {}
    for m in migrations:
        fwd, rb = m.file_names(ts)
        if fwd in out:
            raise DbguardError(f"two migrations would be written to {fwd}")
        out[fwd] = one_line_identifiers(m.render_forward())
        out[rb] = one_line_identifiers(m.render_rollback())
    return out


def unicode_identifier(name: str) -> str:
    """``U&"bad\\000aname"``: a quoted identifier with its non-printable characters as Unicode escapes."""
    parts = []
    for ch in name:
        if ch == '"':
            parts.append('""')
        elif ch == "\\":
            parts.append("\\\\")
        elif ch.isprintable():
            parts.append(ch)
        else:
            parts.append(f"\\{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\+{ord(ch):06x}")
    return 'U&"' + "".join(parts) + '"'


def one_line_identifiers(text: str) -> str:
    """Every quoted identifier that holds a control (or other non-printable) character rewritten as a
    Unicode-escaped one, found with PostgreSQL's own scanner (never inside a string or a comment). A table
    named ``bad<newline>name`` then no longer splits its statements across lines, so each
    ``-- squawk-ignore`` comment still applies to the statement after it (with the raw newline, squawk
    refused the file and ``--all`` wrote nothing)."""
    import pglast
    from pglast.parser import scan

    try:
        tokens = scan(text)
    except pglast.parser.ParseError:
        return text  # the lint reports it
    out, pos = [], 0
    for tok in tokens:
        if tok.name != "IDENT" or text[tok.start] != '"':
            continue
        raw = text[tok.start:tok.end + 1]
        if raw.isprintable():
            continue
        out.append(text[pos:tok.start])
        out.append(unicode_identifier(raw[1:-1].replace('""', '"')))
        pos = tok.end + 1
    out.append(text[pos:])
    return "".join(out)


def write_files(out_dir: str | os.PathLike[str], texts: dict[str, str]) -> list[Path]:
    """Write every file or none: refuses when one exists; each is written atomically."""
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DbguardError(f"cannot create {d}: {exc.strerror or exc}") from None
    clashes = [n for n in texts if (d / n).exists()]
    if clashes:
        raise DbguardError(f"{d / clashes[0]} already exists (generate again a second later, or pass --timestamp)")
    written = []
    try:
        for name, text in texts.items():
            fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
            os.replace(tmp, d / name)
            written.append(d / name)
    except OSError as exc:
        for p in written:
            p.unlink(missing_ok=True)
        raise DbguardError(f"cannot write to {d}: {exc.strerror or exc}") from None
    return written


def pending_fixes(out_dir: str | os.PathLike[str], applied: Iterable[str] = ()) -> set[str]:
    """Finding cache keys named by the migration files in the folder that are not applied yet."""
    d = Path(out_dir)
    if not d.is_dir():
        return set()
    applied = set(applied)
    keys: set[str] = set()
    for p in sorted(d.glob("*.sql")):
        if p.name.endswith("_rollback.sql") or p.name[:-4] in applied:
            continue
        try:
            keys.update(read_fixes(p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    return keys

