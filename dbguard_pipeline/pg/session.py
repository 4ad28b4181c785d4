"""Connections: every connection dbguard opens goes through :func:`connect`, which turns driver errors into
one-line :class:`~dbguard_pipeline.errors.DbguardError` messages that never contain the password, and
:func:`read_only_session`, the read-only transaction with timeouts every audit query runs in."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Optional

import psycopg
from psycopg import conninfo as _conninfo
from psycopg import sql

from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.pg.failures import connect_failure, explain, session_failure
from dbguard_pipeline.pg.readonly import session_settings

# psycopg logs what it ignores while closing a pipeline that failed ("error ignored terminating ..."): dbguard
# reports the failure itself, in one line; an application that configures logging still sees psycopg's records
logging.getLogger("psycopg").addHandler(logging.NullHandler())


def _explain(exc: Exception, dsn: str) -> str:
    return explain(str(exc), dsn) or exc.__class__.__name__


def connect(
    dsn: str, *, autocommit: bool = False, connect_timeout: int = 10, application_name: str = "dbguard", **kwargs
) -> psycopg.Connection:
    """Open a connection, or raise a one-line DbguardError naming the database (never the password)."""
    params = parse_dsn(dsn)
    params.setdefault("connect_timeout", str(connect_timeout))
    params.setdefault("application_name", application_name)
    # text comes back as str whatever the database's encoding (in a SQL_ASCII database psycopg would hand out
    # bytes): the server converts to UTF-8, as the libpq path asks too
    params["client_encoding"] = "UTF8"
    try:
        return psycopg.connect(_conninfo.make_conninfo(**params), autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise connect_failure(str(exc) or exc.__class__.__name__, dsn) from None
    except psycopg.Error as exc:
        raise connect_failure(str(exc) or exc.__class__.__name__, dsn, operational=False) from None


@contextlib.contextmanager
def read_only_session(
    dsn_or_conn,
    *,
    statement_timeout_ms: int = 60_000,
    lock_timeout_ms: int = 2_000,
    settings: Optional[dict[str, str]] = None,
    snapshot: Optional[str] = None,
) -> Iterator[psycopg.Connection]:
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
            pairs = session_settings(statement_timeout_ms, lock_timeout_ms, settings)
            conn.execute(
                "select " + ", ".join(["set_config(%s, %s, true)"] * len(pairs)),
                [v for pair in pairs for v in pair],
            )
            yield conn
    except (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.QueryCanceled,
        psycopg.errors.LockNotAvailable,  # an OperationalError, but the connection is fine
        psycopg.errors.CharacterNotInRepertoire,
        psycopg.errors.UntranslatableCharacter,
        psycopg.OperationalError,
    ) as exc:
        failure = session_failure(
            getattr(exc, "sqlstate", None),
            _explain(exc, dsn),
            dsn,
            statement_timeout_ms=statement_timeout_ms,
            lock_timeout_ms=lock_timeout_ms,
            lost=isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.LockNotAvailable),
        )
        if failure is None:
            raise
        raise failure from None
    finally:
        if own:
            conn.close()
        elif not conn.closed:
            conn.read_only, conn.autocommit, conn.isolation_level = prev_ro, prev_ac, prev_iso
