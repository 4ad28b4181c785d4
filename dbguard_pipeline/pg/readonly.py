"""What every read-only audit transaction sets, transaction-locally (``set_config(..., true)``: it works through
transaction poolers): the one list for both ways dbguard reads a database, psycopg's
:func:`~dbguard_pipeline.pg.session.read_only_session` and the libpq catalog path (:mod:`.catalog`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional


def session_settings(
    statement_timeout_ms: int, lock_timeout_ms: int, extra: Optional[Mapping[str, str]] = None
) -> list[tuple[str, str]]:
    """(name, value) of the settings: the timeouts, an idle-in-transaction limit of twice the statement timeout,
    ``search_path = pg_catalog`` (every expression the catalog prints comes back schema-qualified), then ``extra``."""
    st = int(statement_timeout_ms)
    return [
        ("statement_timeout", f"{st}ms"),
        ("lock_timeout", f"{int(lock_timeout_ms)}ms"),
        ("idle_in_transaction_session_timeout", f"{st * 2}ms"),
        ("search_path", "pg_catalog"),
        *(extra or {}).items(),
    ]
