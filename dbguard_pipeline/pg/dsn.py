"""Database URLs: parsing (one-line errors that never echo the URL), display names, secret masking."""

from __future__ import annotations

import re
from typing import Optional

from dbguard_pipeline.errors import ConnectionError_, DbguardError

ENV_DSN = "DBGUARD_DATABASE_URL"


def _conninfo_to_dict(dsn: str) -> dict:
    """libpq's parse of a DSN (through :mod:`dbguard_pipeline.pg.libpq` when it loads: no psycopg import on the
    CLI's start-up path; else psycopg's, the same libpq function); a malformed one raises ValueError."""
    from dbguard_pipeline.pg import libpq

    lib = libpq.load()
    if lib is not None:
        return libpq.conninfo_to_dict(lib, dsn)
    import psycopg
    from psycopg import conninfo

    try:
        return conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(str(exc)) from None


def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a URL or key=value DSN; a malformed one raises a message that does not echo it."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConnectionError_("empty database URL")
    try:
        params = _conninfo_to_dict(dsn)
    except ValueError as exc:
        reason = mask_secrets((str(exc).splitlines() or [""])[0], dsn)
        # libpq quotes the string in some messages: never show what could hold a password
        reason = re.sub(r'"[^"]*"', '"…"', reason)
        raise ConnectionError_(f"malformed database URL: {reason}") from None
    return {k: str(v) for k, v in params.items() if v is not None}


def dsn_password(dsn: str) -> Optional[str]:
    try:
        password = _conninfo_to_dict(dsn).get("password")
        return str(password) if password else None
    except (ValueError, AttributeError):  # malformed, or not a string
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
    from psycopg import conninfo

    return conninfo.make_conninfo(**params)
