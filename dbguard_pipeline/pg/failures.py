"""The one-line messages of database failures, shared by the psycopg path (:mod:`dbguard_pipeline.pg.session`)
and the libpq client (:mod:`dbguard_pipeline.pg.libpq`), so both say the same thing: never the password, the
reason libpq or the server gave, and the exception class the CLI maps to an exit code."""

from __future__ import annotations

import re

from dbguard_pipeline.errors import ConnectionError_, DbguardError, PermissionError_
from dbguard_pipeline.pg.dsn import describe_dsn, mask_secrets


def explain(raw: str, dsn: str) -> str:
    """libpq's or the server's message on one line, without the noise (which host, which attempt) and without
    secrets."""
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    # libpq puts the interesting part after "connection failed:" / "FATAL:"
    text = " ".join(lines)
    text = re.sub(r"connection (is bad|failed): ", "", text)
    text = re.sub(r'connection to server (at|on) (socket )?"[^"]*"( \([^)]*\))?(, port \d+)? failed: ', "", text)
    text = text.replace("FATAL:  ", "").replace("FATAL: ", "")
    # several attempts (IPv4/IPv6, multiple hosts) repeat the same reason
    text = text.split(" Multiple connection attempts failed")[0]
    return mask_secrets(text, dsn)


def connect_failure(raw: str, dsn: str, *, operational: bool = True) -> DbguardError:
    """The error for a connection that could not be made (``operational``: libpq or the server refused it)."""
    where = describe_dsn(dsn)
    msg = explain(raw, dsn)
    if not operational:
        return ConnectionError_(f"cannot connect to {where}: {msg}")
    low = msg.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return ConnectionError_(f"cannot connect to {where}: wrong user name or password")
    if "does not exist" in low and "database" in low:
        return ConnectionError_(f"cannot connect to {where}: {msg}")
    if "permission denied" in low:
        return PermissionError_(f"cannot connect to {where}: {msg}")
    return ConnectionError_(f"cannot connect to {where}: {msg}")


def session_failure(
    sqlstate: str | None, raw: str, dsn: str, *, statement_timeout_ms: int, lock_timeout_ms: int, lost: bool
) -> DbguardError | None:
    """The error for a statement of a read-only session that failed (None: not one of the failures a user
    causes; the caller reports it as it is)."""
    if sqlstate == "42501":
        return PermissionError_(f"permission denied: {explain(raw, dsn)}")
    if sqlstate == "57014":
        return DbguardError(
            f"query cancelled by the statement timeout ({statement_timeout_ms} ms): {explain(raw, dsn)}"
        )
    if sqlstate == "55P03":  # the connection is fine: a lock was held too long
        return DbguardError(
            f"gave up waiting for a lock after the lock timeout ({lock_timeout_ms} ms): {explain(raw, dsn)}"
        )
    if sqlstate in ("22021", "22P05"):  # bytes the UTF-8 client encoding cannot carry
        return DbguardError(
            f"the database holds text that is not valid UTF-8 (a SQL_ASCII database with other bytes in names or "
            f"comments?): {explain(raw, dsn)}"
        )
    if lost:
        return ConnectionError_(f"lost the connection to the database: {explain(raw, dsn)}")
    return None
