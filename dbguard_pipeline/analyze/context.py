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

# What a Supabase access token carries besides the identity (role, the tenant claim, sub), without the claims a
# policy might judge a person by (email, phone, user_metadata's content): a policy that reads the claims per row
# parses this whole document for every row, so the measured cost is the production one, not a three-claim toy's.
TOKEN_CLAIMS: dict[str, Any] = {
    "iss": "https://project.supabase.co/auth/v1",
    "aud": "authenticated",
    "exp": 4102444800,
    "iat": 1767225600,
    "app_metadata": {"provider": "email", "providers": ["email"]},
    "user_metadata": {},
    "aal": "aal1",
    "amr": [{"method": "password", "timestamp": 1767225600}],
    "session_id": "00000000-0000-4000-8000-000000000000",
    "is_anonymous": False,
}


class AppContext:
    """Switches the current transaction to the application role with a tenant's context (transaction-local:
    it ends with the transaction)."""

    def __init__(self, conn: psycopg.Connection, snapshot: Snapshot, config: Config):
        self._session = Session(conn, config, snapshot.database)
        self._session.claims_extra = TOKEN_CLAIMS
        self._tm = config.tenant

    def enter(self, tenant: str, user: Optional[str] = None) -> None:
        self._session.jwt_sub = user
        self._session.as_app(tenant)

    def describe(self) -> dict[str, Any]:
        if self._tm.context == "jwt":
            return {
                "mechanism": "jwt",
                "setting": "request.jwt.claims",
                "claim": self._tm.jwt_claim,
                "token": "the claims of a Supabase access token (no email or phone) plus the tenant claim and sub",
                "role": self._tm.app_role,
            }
        return {"mechanism": "guc", "setting": self._tm.guc, "role": self._tm.app_role}
