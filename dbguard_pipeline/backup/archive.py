"""pg_dump and pg_restore (the embedded server's binaries, else the ones on PATH), and the replay of a dump's
data section on a connection dbguard holds, inside dbguard's own transaction.

Credentials reach the tools through the environment (PGPASSWORD and friends), never on a command line; their
error output is cut to one line and masked. pg_restore never connects to a database here: it turns the
archive into SQL text (``--data-only -f -``), and :func:`replay` runs the ``COPY ... FROM stdin`` blocks and
the sequence values on the caller's connection, so the whole restore is one transaction that either commits
completely or leaves the database as it was.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

import psycopg

from dbguard_pipeline.backup.checksum import Target
from dbguard_pipeline.backup.manifest import BackupError
from dbguard_pipeline.pg.clients import client_binary, libpq_env
from dbguard_pipeline.pg.dsn import mask_secrets
from dbguard_pipeline.text import escape_controls, one_line, quoted_qname

APP_NAME = "dbguard backup"
COPY_BATCH = 1 << 20  # bytes of COPY data sent per write


class _CleanupNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error ignored")


@contextlib.contextmanager
def quiet_cleanup() -> Iterator[None]:
    """psycopg logs a warning when it cannot end a COPY or roll back on a connection the server killed; the
    error that follows already says so in one line, so those warnings are dropped while this is active."""
    logger, noise = logging.getLogger("psycopg"), _CleanupNoise()
    logger.addFilter(noise)
    try:
        yield
    finally:
        logger.removeFilter(noise)


def tool_env(dsn: str, tool: str) -> dict[str, str]:
    env = libpq_env(dsn)
    env["PGAPPNAME"] = f"{APP_NAME} ({tool})"
    return env


def tool_failure(
    tool: str, proc: subprocess.CompletedProcess[bytes] | subprocess.Popen[bytes], stderr: bytes, dsn: str
) -> str:
    """One line saying why a pg_dump/pg_restore run failed, with no password in it."""
    rc = proc.returncode
    if rc is not None and rc < 0:
        with contextlib.suppress(ValueError):
            name = signal.Signals(-rc).name
            why = " (the file size limit)" if name == "SIGXFSZ" else ""
            return f"{tool} was killed by {name}{why}"
        return f"{tool} was killed by signal {-rc}"
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln or "FATAL" in ln or "ERROR" in ln] or lines or ["no output"]
    text = errors[0].split("error: ", 1)[-1] if errors[0].startswith(f"{tool}:") else errors[0]
    detail = [ln.split("detail: ", 1)[-1] for ln in lines if ln.startswith(f"{tool}: detail:")]
    if detail and detail[0] not in text:
        text += f" ({detail[0]})"
    return mask_secrets(one_line(text), dsn)


@functools.lru_cache(maxsize=4)
def tool_version(tool: str) -> str:
    out = subprocess.run([client_binary(tool), "--version"], capture_output=True, timeout=60, check=False)
    return out.stdout.decode("utf-8", "replace").strip().rsplit(" ", 1)[-1]


def table_pattern(target: Target) -> str:
    """A pg_dump ``--table`` pattern that matches exactly this table: inside double quotes, ``*``, ``?``,
    ``.`` and regex characters are literal and a doubled quote is a quote (psql's pattern rules)."""
    return quoted_qname(target.schema, target.name)


def dump(
    dsn: str, out: Path, *, snapshot: str, targets: Optional[Sequence[Target]], lock_wait_ms: int = 10_000
) -> None:
    """pg_dump -Fc of the targets (None: the whole database, large objects excepted) at the exported snapshot."""
    cmd = [
        client_binary("pg_dump"),
        "--format=custom",
        f"--file={out}",
        f"--snapshot={snapshot}",
        f"--lock-wait-timeout={int(lock_wait_ms)}",
        "--no-password",
    ]
    if targets is None:
        cmd.append("--no-blobs")
    else:
        cmd.append("--strict-names")
        cmd += [f"--table={table_pattern(t)}" for t in targets]
    proc = subprocess.run(cmd, env=tool_env(dsn, "pg_dump"), capture_output=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"pg_dump failed: {tool_failure('pg_dump', proc, proc.stderr, dsn)}")


# --------------------------------------------------------------------------- replay
_SKIPPED_SETTINGS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "transaction_timeout")


@dataclass
class Replayed:
    tables: int = 0
    rows: int = 0
    sequences: int = 0


def _complete(statement: str) -> bool:
    """The statement ends here: a ';' outside quotes (identifiers and literals may hold ';' and newlines)."""
    in_single = in_double = False
    for ch in statement:
        if ch == "'" and not in_double:
            in_single = not in_single
        elif ch == '"' and not in_single:
            in_double = not in_double
    return not in_single and not in_double and statement.rstrip().endswith(";")


def _statements(stream: IO[bytes], encoding: Callable[[], str]) -> Iterator[tuple[str, IO[bytes]]]:
    """The SQL statements of pg_restore's output, one at a time; after a COPY statement the caller reads its
    data lines from the stream up to the ``\\.`` line."""
    pending = b""
    for raw in stream:
        if not pending and (not raw.strip() or raw.startswith(b"--")):
            continue
        if not pending and (raw.startswith(b"\\restrict ") or raw.startswith(b"\\unrestrict ")):
            continue  # psql meta-commands newer pg_restore versions wrap scripts in
        pending += raw
        text = pending.decode(encoding(), "strict")
        if _complete(text):
            pending = b""
            yield text.strip(), stream
    if pending.strip():
        raise BackupError("the dump's data section ends in the middle of a statement")


def _copy(conn: psycopg.Connection, statement: str, stream: IO[bytes]) -> int:
    with conn.cursor() as cur:
        with cur.copy(statement) as copy:
            batch: list[bytes] = []
            size = 0
            for line in stream:
                if line in (b"\\.\n", b"\\.\r\n", b"\\."):
                    break
                batch.append(line)
                size += len(line)
                if size >= COPY_BATCH:
                    copy.write(b"".join(batch))
                    batch, size = [], 0
            else:
                raise BackupError("the dump's data section ends in the middle of a table's rows")
            if batch:
                copy.write(b"".join(batch))
        return max(cur.rowcount, 0)


def replay(
    path: Path,
    conn: psycopg.Connection,
    log: Callable[[str], None] = lambda _: None,
    *,
    use_list: Optional[Path] = None,
) -> Replayed:
    """Load the archive's table rows and sequence values (those in ``use_list``, a pg_restore --use-list
    file, when given) through ``conn``, in its current transaction."""
    done = Replayed()
    cmd = [client_binary("pg_restore"), "--data-only", "--file=-"] + ([f"--use-list={use_list}"] if use_list else [])
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([*cmd, str(path)], stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        try:
            for statement, stream in _statements(proc.stdout, lambda: conn.info.encoding):
                head = statement[:60].upper()
                if head.startswith("COPY ") and statement.rstrip(";").rstrip().endswith("FROM stdin"):
                    rows = _copy(conn, statement, stream)
                    done.tables += 1
                    done.rows += rows
                    log(f"loaded {rows} rows: {escape_controls(one_line(statement[5 : statement.find(' (')]))}")
                elif head.startswith("SELECT PG_CATALOG.SETVAL("):
                    conn.execute(statement)
                    done.sequences += 1
                elif head.startswith("SELECT PG_CATALOG.SET_CONFIG(") or head.startswith("SET "):
                    if not any(head.startswith(f"SET {s.upper()} ") for s in _SKIPPED_SETTINGS):
                        conn.execute(statement)
                else:
                    raise BackupError(
                        f"unexpected statement in the dump's data section: {escape_controls(one_line(statement))[:60]}"
                    )
            proc.stdout.close()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            errors.seek(0)
            raise BackupError(f"pg_restore failed: {tool_failure('pg_restore', proc, errors.read(), '')}")
    return done


def restore_whole(path: Path, dsn: str, dbname: str) -> None:
    """pg_restore the whole archive (schema and data) into the empty database ``dbname`` (a name dbguard chose),
    in one transaction."""
    cmd = [
        client_binary("pg_restore"),
        "--exit-on-error",
        "--single-transaction",
        "--no-owner",
        "--no-privileges",
        f"--dbname={dbname}",
        str(path),
    ]
    proc = subprocess.run(cmd, env=tool_env(dsn, "pg_restore"), capture_output=True, check=False)
    if proc.returncode != 0:
        raise BackupError(
            f"pg_restore into the scratch database failed: {tool_failure('pg_restore', proc, proc.stderr, dsn)}"
        )
