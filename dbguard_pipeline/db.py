"""Connections: DSN resolution, the embedded PostgreSQL, read-only audit sessions, secret masking.

Every connection dbguard opens goes through :func:`connect`, which turns driver errors into one-line
:class:`~dbguard_pipeline.errors.DbguardError` messages that never contain the password.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import psycopg
from psycopg import conninfo as _conninfo
from psycopg import sql

from .errors import ConnectionError_, DbguardError, PermissionError_

ENV_DSN = "DBGUARD_DATABASE_URL"
DEMO_DATABASE = "dbguard_demo"


# --------------------------------------------------------------------------- DSNs and secrets
def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a URL or key=value DSN; a malformed one raises a message that does not echo it."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConnectionError_("empty database URL")
    try:
        params = _conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = mask_secrets(str(exc).splitlines()[0], dsn)
        # libpq quotes the string in some messages: never show what could hold a password
        reason = re.sub(r'"[^"]*"', '"…"', reason)
        raise ConnectionError_(f"malformed database URL: {reason}") from None
    return {k: str(v) for k, v in params.items() if v is not None}


def dsn_password(dsn: str) -> Optional[str]:
    try:
        return _conninfo.conninfo_to_dict(dsn).get("password") or None
    except Exception:
        m = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", dsn or "") or re.search(r"password\s*=\s*'?([^'\s]*)", dsn or "")
        return m.group(1) if m else None


def mask_secrets(text: str, *dsns: Optional[str]) -> str:
    """Remove passwords (from the given DSNs, URLs and password=... pairs) from text."""
    if not text:
        return text
    for dsn in dsns:
        if not dsn:
            continue
        pw = dsn_password(dsn)
        if pw:
            text = text.replace(pw, "***")
            from urllib.parse import quote

            text = text.replace(quote(pw, safe=""), "***")
    text = re.sub(r"(?i)(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    text = re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)
    return text


def describe_dsn(dsn: str) -> str:
    """A printable name for a database: user@host:port/dbname, never the password."""
    try:
        p = parse_dsn(dsn)
    except DbguardError:
        return "<malformed database URL>"
    host = p.get("host") or "localhost"
    if host.startswith("/"):
        host = "socket"
    port = p.get("port")
    user = p.get("user") or ""
    db = p.get("dbname") or user or "postgres"
    return f"{user + '@' if user else ''}{host}{':' + port if port else ''}/{db}"


def database_name(dsn: str) -> str:
    try:
        p = parse_dsn(dsn)
    except DbguardError:
        return "unknown"
    return p.get("dbname") or p.get("user") or "postgres"


def with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    params = parse_dsn(dsn)
    params["dbname"] = dbname
    return _conninfo.make_conninfo(**params)


# --------------------------------------------------------------------------- the embedded server
def dbguard_home() -> Path:
    base = os.environ.get("DBGUARD_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "dbguard"
    )
    return Path(base)


def _ensure_runtime_dir() -> None:
    # pgserver keeps its lock file in the user runtime dir; give it one quietly when none is set.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(tempfile.gettempdir()) / f"dbguard-runtime-{os.getuid()}"
        d.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(d)


_servers: dict[str, object] = {}


def embedded_server(pgdata: Optional[str | os.PathLike] = None):
    """Start (or reuse) the embedded PostgreSQL; its data directory lives in the cache folder.

    The server is shared by every process that uses the same data directory and stopped when the
    last of them exits.
    """
    _ensure_runtime_dir()
    import pgserver  # imported late: only the embedded path needs it

    path = Path(pgdata) if pgdata else dbguard_home() / "pgdata"
    key = str(path.resolve()) if path.exists() else str(path)
    if key not in _servers:
        path.mkdir(parents=True, exist_ok=True)
        try:
            _servers[key] = pgserver.get_server(path, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises CalledProcessError, TimeoutExpired, ...
            raise ConnectionError_(f"could not start the embedded PostgreSQL in {path}: {exc}") from None
    return _servers[key]


def embedded_dsn(dbname: str = "postgres", pgdata: Optional[str | os.PathLike] = None) -> str:
    srv = embedded_server(pgdata)
    return srv.get_uri(dbname)


def resolve_dsn(dsn: Optional[str] = None, *, demo_loader=None) -> str:
    """--dsn, else $DBGUARD_DATABASE_URL, else the embedded demo database (loaded on first use)."""
    if dsn:
        parse_dsn(dsn)
        return dsn
    env = os.environ.get(ENV_DSN)
    if env:
        parse_dsn(env)
        return env
    from .demo import ensure_demo_database

    return ensure_demo_database()


# --------------------------------------------------------------------------- connections
def _explain(exc: Exception, dsn: str) -> str:
    raw = str(exc).strip()
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    # libpq puts the interesting part after "connection failed:" / "FATAL:"
    text = " ".join(lines) if lines else exc.__class__.__name__
    text = re.sub(r"connection (is bad|failed): ", "", text)
    text = re.sub(r'connection to server (at|on) (socket )?"[^"]*"( \([^)]*\))?(, port \d+)? failed: ', "", text)
    text = text.replace("FATAL:  ", "").replace("FATAL: ", "")
    # several attempts (IPv4/IPv6, multiple hosts) repeat the same reason
    parts = []
    for part in re.split(r"(?<=\S)\s+(?=Multiple connection attempts failed)", text):
        parts.append(part)
    text = parts[0]
    text = text.split(" Multiple connection attempts failed")[0]
    return mask_secrets(text, dsn)


def connect(dsn: str, *, autocommit: bool = False, connect_timeout: int = 10, application_name: str = "dbguard",
            **kwargs) -> psycopg.Connection:
    """Open a connection, or raise a one-line DbguardError naming the database (never the password)."""
    params = parse_dsn(dsn)
    params.setdefault("connect_timeout", str(connect_timeout))
    params.setdefault("application_name", application_name)
    where = describe_dsn(dsn)
    try:
        return psycopg.connect(_conninfo.make_conninfo(**params), autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        msg = _explain(exc, dsn)
        low = msg.lower()
        if "password authentication failed" in low or "no password supplied" in low:
            raise ConnectionError_(f"cannot connect to {where}: wrong user name or password") from None
        if "does not exist" in low and "database" in low:
            raise ConnectionError_(f"cannot connect to {where}: {msg}") from None
        if "permission denied" in low:
            raise PermissionError_(f"cannot connect to {where}: {msg}") from None
        raise ConnectionError_(f"cannot connect to {where}: {msg}") from None
    except psycopg.Error as exc:
        raise ConnectionError_(f"cannot connect to {where}: {_explain(exc, dsn)}") from None


@contextlib.contextmanager
def read_only_session(dsn_or_conn, *, statement_timeout_ms: int = 60_000, lock_timeout_ms: int = 2_000,
                      settings: Optional[dict[str, str]] = None,
                      snapshot: Optional[str] = None) -> Iterator[psycopg.Connection]:
    """A connection inside one READ ONLY transaction with statement and lock timeouts.

    Accepts a DSN (opens and closes its own connection) or an open connection (which must not be in a
    transaction). The transaction is always rolled back: an audit never writes. search_path is pg_catalog
    inside, so every expression the catalog prints comes back schema-qualified whatever the user's setting.
    ``settings``: more transaction-local settings, set in the same round trip (e.g. ``{"row_security": "off"}``).
    ``snapshot``: "export" runs the transaction at REPEATABLE READ so that ``pg_export_snapshot()`` can share
    its view; an exported snapshot id makes this transaction read exactly that view (``SET TRANSACTION
    SNAPSHOT``), so two connections see one state of the database.
    """
    own = isinstance(dsn_or_conn, str)
    conn = connect(dsn_or_conn) if own else dsn_or_conn
    dsn = dsn_or_conn if own else ""
    prev_ro, prev_ac, prev_iso = conn.read_only, conn.autocommit, conn.isolation_level
    try:
        conn.autocommit = False
        conn.read_only = True
        if snapshot:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction(force_rollback=True):
            if snapshot and snapshot != "export":  # must be the transaction's first statement
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            extra = list((settings or {}).items())
            conn.execute(
                "select set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true),"
                " set_config('idle_in_transaction_session_timeout', %s, true),"
                " set_config('search_path', 'pg_catalog', true)" + ", set_config(%s, %s, true)" * len(extra),
                (f"{int(statement_timeout_ms)}ms", f"{int(lock_timeout_ms)}ms", f"{int(statement_timeout_ms) * 2}ms",
                 *[v for kv in extra for v in kv]),
            )
            yield conn
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermissionError_(f"permission denied: {_explain(exc, dsn)}") from None
    except psycopg.errors.QueryCanceled as exc:
        raise DbguardError(f"query cancelled by the statement timeout ({statement_timeout_ms} ms): {_explain(exc, dsn)}") from None
    except psycopg.errors.LockNotAvailable as exc:
        # a subclass of OperationalError, but the connection is fine: a lock was held too long
        raise DbguardError(f"gave up waiting for a lock after the lock timeout ({lock_timeout_ms} ms): "
                           f"{_explain(exc, dsn)}") from None
    except psycopg.OperationalError as exc:
        raise ConnectionError_(f"lost the connection to the database: {_explain(exc, dsn)}") from None
    finally:
        if own:
            conn.close()
        elif not conn.closed:
            conn.read_only, conn.autocommit, conn.isolation_level = prev_ro, prev_ac, prev_iso
