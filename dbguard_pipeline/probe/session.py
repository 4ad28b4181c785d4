"""The probe's connection: preflight (who may probe as whom), the catalog facts the probes need, timeouts, the
application's role and tenant context, and :meth:`Session.attempt`, which runs one statement as the application
in a savepoint that is always rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import NotFoundError, PermissionError_
from dbguard_pipeline.model.schema import Role
from dbguard_pipeline.semantics.roles import bypasses_rls
from dbguard_pipeline.text import ident

Query = Union[sql.SQL, sql.Composed]  # a statement built with psycopg's sql module

# SQLSTATEs of a statement that did not finish: query canceled (statement timeout), lock not available,
# serialization failure, deadlock.
_TIMEOUTS = ("57014", "55P03", "40001", "40P01")


class ProbeRefused(PermissionError_):
    """The probe will not run as asked (a superuser or BYPASSRLS application role, missing rights)."""


def error_message(error: psycopg.Error) -> str:
    """The server's primary message on one line."""
    diag = getattr(error, "diag", None)
    msg = (diag.message_primary if diag is not None else None) or str(error).splitlines()[0]
    return " ".join(msg.split())


@dataclass
class Outcome:
    """What one attempt returned: its rows and row count, the effect measured afterwards, or the error."""

    rows: Optional[list[tuple[Any, ...]]] = None
    rowcount: int = 0
    measured: Any = None
    error: Optional[psycopg.Error] = None

    @property
    def sqlstate(self) -> str:
        return (self.error.sqlstate or "") if self.error is not None else ""

    @property
    def kind(self) -> str:
        """ok | refused (insufficient privilege, row level security) | integrity | timeout | error."""
        s = self.sqlstate
        if not self.error:
            return "ok"
        if s == "42501":
            return "refused"  # insufficient privilege, including "violates row-level security policy"
        if s.startswith("23"):
            return "integrity"
        if s in _TIMEOUTS:
            return "timeout"
        return "error"

    @property
    def message(self) -> str:
        return error_message(self.error) if self.error is not None else ""


class Session:
    """The connecting (superuser or BYPASSRLS) role's connection, and how it acts as the application."""

    def __init__(self, conn: psycopg.Connection[Any], config: Config, database: str):
        self.conn = conn
        self.config = config
        self.tm = config.tenant
        self.role = self.tm.app_role
        self.database = database
        self.superuser = False
        self.jwt_sub: Optional[str] = None  # the ``sub`` claim sent with a tenant's context (JWT tenancy)
        # claims sent besides the identity (role, tenant, sub), which always win over them: analyze sends a token
        # the size of a real one; the probe sends none (a claim it invented could change what a policy admits)
        self.claims_extra: dict[str, Any] = {}
        self.enum_first: dict[str, str] = {}  # enum type -> its first label
        self.domain_base: dict[str, str] = {}  # domain type -> its base type
        self.delete_triggers: set[str] = set()  # tables with user triggers on DELETE
        self.write_hooks: set[str] = set()  # tables with user triggers on INSERT or UPDATE, or rules
        self.view_tenant_columns: dict[str, str] = {}  # "schema.view" -> type of its tenant column
        self.analyzer: Any = None  # the policy analyzer of the snapshot (which columns hold the acting user)

    # ------------------------------------------------------------------ set up
    def preflight(self) -> None:
        """Refuse what would make the probe meaningless or impossible; read the catalog facts it needs."""
        row = self.conn.execute(
            "select cu.rolname::text, cu.rolsuper, cu.rolbypassrls, cu.rolcanlogin, r.rolname is not null,"
            " coalesce(r.rolsuper, false), coalesce(r.rolbypassrls, false), coalesce(r.rolcanlogin, false),"
            " coalesce(pg_has_role(current_user, r.oid, 'MEMBER'), false)"
            " from pg_roles cu left join pg_roles r on r.rolname = %s where cu.rolname = current_user",
            (self.role,),
        ).fetchone()
        assert row is not None
        me = Role(row[0], bool(row[1]), bool(row[2]), bool(row[3]))
        exists, app, can_set = row[4], Role(self.role, bool(row[5]), bool(row[6]), bool(row[7])), row[8]
        if not exists:
            raise NotFoundError(
                f"the application role {self.role!r} does not exist in {self.database}: set "
                f"tenant.app_role in dbguard.yaml to the role the application's queries run as"
            )
        if app.superuser:
            raise ProbeRefused(
                f"refusing to probe as {ident(self.role)}: it is a superuser, and row level security never "
                f"applies to superusers, so the probes would prove nothing; set tenant.app_role to the "
                f"role the application's queries run as"
            )
        if app.bypassrls:
            raise ProbeRefused(
                f"refusing to probe as {ident(self.role)}: it has BYPASSRLS, so row level security never "
                f"applies to it and every tenant's rows are open to it; run the application as a role "
                f"without BYPASSRLS (ALTER ROLE {ident(self.role)} NOBYPASSRLS) and probe again"
            )
        if not bypasses_rls(me):
            raise ProbeRefused(
                f"connected as {ident(me.name)}, which is neither a superuser nor BYPASSRLS: the probe builds "
                f"test rows and counts tenant B's rows behind row level security; connect as the "
                f"database owner (postgres on Supabase)"
            )
        if not can_set:
            raise ProbeRefused(
                f"connected as {ident(me.name)}, which cannot SET ROLE {ident(self.role)}: "
                f"GRANT {ident(self.role)} TO {ident(me.name)}"
            )
        self.superuser = me.superuser
        self._read_catalog()

    def _read_catalog(self) -> None:
        for typ, kind, value in self.conn.execute(
            "select format_type(t.oid, null), 'e', (select e.enumlabel::text from pg_enum e where e.enumtypid = t.oid"
            " order by e.enumsortorder limit 1) from pg_type t where t.typtype = 'e'"
            " union all select format_type(t.oid, null), 'd', format_type(t.typbasetype, t.typtypmod)"
            " from pg_type t where t.typtype = 'd'"
        ).fetchall():
            if value is not None:
                (self.enum_first if kind == "e" else self.domain_base)[typ] = value
        self.delete_triggers = {
            q
            for (q,) in self.conn.execute(
                "select distinct n.nspname || '.' || c.relname from pg_trigger g join pg_class c on c.oid = g.tgrelid"
                " join pg_namespace n on n.oid = c.relnamespace where not g.tgisinternal and (g.tgtype & 8) <> 0"
            ).fetchall()
        }
        self.write_hooks = {
            q
            for (q,) in self.conn.execute(
                "select n.nspname || '.' || c.relname from pg_trigger g join pg_class c on c.oid = g.tgrelid"
                " join pg_namespace n on n.oid = c.relnamespace where not g.tgisinternal and (g.tgtype & 20) <> 0"
                " union select n.nspname || '.' || c.relname from pg_rewrite r join pg_class c on c.oid = r.ev_class"
                " join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p')"
            ).fetchall()
        }
        self.view_tenant_columns = {
            q: typ
            for q, typ in self.conn.execute(
                "select n.nspname || '.' || c.relname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
                " join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace"
                " where c.relkind in ('v', 'm') and a.attnum > 0 and not a.attisdropped and a.attname = %s",
                (self.tm.column,),
            ).fetchall()
        }

    def scalar(self, stmt: Query) -> Any:
        """The first column of the one row ``stmt`` returns."""
        row = self.conn.execute(stmt).fetchone()
        assert row is not None
        return row[0]

    def timeouts(self) -> None:
        """Statement, lock and idle timeouts for the current transaction."""
        st, lt = int(self.config.statement_timeout_ms), int(self.config.lock_timeout_ms)
        self.conn.execute(
            "select set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true),"
            " set_config('idle_in_transaction_session_timeout', %s, true)",
            (f"{st}ms", f"{lt}ms", f"{st * 2}ms"),
        )

    # ------------------------------------------------------------------ acting as the application
    def _claims(self, tenant: Optional[str]) -> str:
        claims: dict[str, Any] = json.loads(json.dumps(self.claims_extra)) if self.claims_extra else {}
        claims["role"] = self.role
        if tenant is not None:
            node = claims
            parts = self.tm.jwt_claim.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    node[p] = {}
                node = node[p]
            node[parts[-1]] = tenant
            if self.jwt_sub:
                claims["sub"] = self.jwt_sub
        return json.dumps(claims, sort_keys=True)

    def set_context(self, tenant: Optional[str]) -> None:
        """Tenant context as the application sets it (transaction-local); None = no tenant context."""
        if self.tm.context == "jwt":
            self.conn.execute("select set_config('request.jwt.claims', %s, true)", (self._claims(tenant),))
        else:
            self.conn.execute("select set_config(%s, %s, true)", (self.tm.guc, tenant or ""))

    def as_app(self, tenant: Optional[str]) -> None:
        self.set_context(tenant)
        self.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.role)))

    def attempt(
        self,
        tenant: Optional[str],
        stmt: Query,
        measure: Optional[Callable[[], Any]] = None,
        *,
        before: Optional[Callable[[], object]] = None,
    ) -> Outcome:
        """Run ``stmt`` as the application role in a savepoint that is always rolled back; measure its effect
        as the connecting role inside the same savepoint."""
        assert self.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        try:
            with self.conn.transaction(force_rollback=True):
                if before:
                    before()
                self.as_app(tenant)
                cur = self.conn.execute(stmt)
                rows = cur.fetchall() if cur.description else None
                rowcount = cur.rowcount
                self.conn.execute("RESET ROLE")
                measured = measure() if measure else None
                return Outcome(rows=rows, rowcount=rowcount, measured=measured)
        except psycopg.Error as exc:
            if self.conn.broken or isinstance(exc, psycopg.OperationalError) and self.conn.closed:
                raise
            return Outcome(error=exc)
