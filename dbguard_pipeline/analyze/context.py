"""The tenant context as the application sets it, taken from the isolation probe (one implementation of "act as
the app role for tenant X": ``SET LOCAL ROLE`` and the GUC, or Supabase's ``request.jwt.claims`` with the
tenant claim and ``sub``). This module is the only place ``analyze`` reaches into the probe.
"""
from __future__ import annotations

from typing import Any, Optional

import psycopg

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.probe.session import Session


class AppContext:
    """Switches the current transaction to the application role with a tenant's context (transaction-local:
    it ends with the transaction)."""

    def __init__(self, conn: psycopg.Connection, snapshot: Snapshot, config: Config):
        self._session = Session(conn, config, snapshot.database)
        self._tm = config.tenant

    def enter(self, tenant: str, user: Optional[str] = None) -> None:
        self._session.jwt_sub = user
        self._session.as_app(tenant)

    def describe(self) -> dict[str, Any]:
        if self._tm.context == "jwt":
            return {"mechanism": "jwt", "setting": "request.jwt.claims", "claim": self._tm.jwt_claim,
                    "role": self._tm.app_role}
        return {"mechanism": "guc", "setting": self._tm.guc, "role": self._tm.app_role}
