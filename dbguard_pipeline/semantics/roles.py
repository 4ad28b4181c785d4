"""Roles: which bypass row level security, and which are the API's (Supabase PostgREST) roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.model.schema import Function, Policy, Role, Snapshot, Table

if TYPE_CHECKING:
    from dbguard_pipeline.config import Config

# Roles through which API clients reach the database on Supabase (PostgREST), besides the configured app role.
API_ROLES = ("anon", "authenticated")
# Grantees whose privileges any API client has: the API roles and PUBLIC.
API_GRANTEES = ("anon", "authenticated", "public")
# Grantees whose privileges a client has without signing in.
UNAUTHENTICATED_GRANTEES = ("anon", "public")
# Supabase's privileged JWT roles: the ``role`` claim (what ``auth.role()`` returns and the role PostgREST
# switches to) of the service key (service_role, BYPASSRLS) and of the platform (supabase_admin, superuser).
# A fact about Supabase's JWTs, not about the audited database: a policy branch such as
# ``auth.role() = 'service_role'`` opens nothing to API clients even when the snapshot lacks these roles.
SUPABASE_BYPASS_JWT_ROLES = ("service_role", "supabase_admin")


def bypasses_rls(role: Role) -> bool:
    """Superusers and BYPASSRLS roles see every row whatever the policies."""
    return role.superuser or role.bypassrls


def bypass_roles(snapshot: Snapshot) -> set[str]:
    return {r.name for r in snapshot.roles if bypasses_rls(r)}


def bypass_text(role: Role) -> str:
    """``SUPERUSER and BYPASSRLS``, ``BYPASSRLS``, ... (empty when neither)."""
    return " and ".join(x for x, on in (("SUPERUSER", role.superuser), ("BYPASSRLS", role.bypassrls)) if on)


def policy_is_moot(policy: Policy, snapshot: Snapshot) -> bool:
    """True when every role the policy applies to bypasses RLS anyway (e.g. ``TO service_role``)."""
    if "public" in policy.roles or not policy.roles:
        return False
    bypass = bypass_roles(snapshot)
    return all(r in bypass for r in policy.roles)


# --------------------------------------------------------------------------- membership and ownership
class RoleGraph:
    """Role membership of one snapshot (``pg_auth_members``, transitively): whose privileges a role has, which
    roles it may become, and who acts as a table's owner. Build one per audit (the rules share it through
    RuleContext)."""

    def __init__(self, snapshot: Snapshot):
        self._roles = {r.name: r for r in snapshot.roles}
        self._privileges: dict[str, frozenset[str]] = {}
        self._members: dict[str, frozenset[str]] = {}

    def role(self, name: str) -> Optional[Role]:
        return self._roles.get(name)

    def _closure(self, name: str, inherit_only: bool) -> frozenset[str]:
        seen = {name}
        todo = [name]
        while todo:
            r = self._roles.get(todo.pop())
            for m in r.memberships if r is not None else ():
                if m.role not in seen and (m.inherit or not inherit_only):
                    seen.add(m.role)
                    todo.append(m.role)
        return frozenset(seen)

    def privileges_of(self, name: str) -> frozenset[str]:
        """The role and every role whose privileges it has without SET ROLE (inherited grants, transitively)."""
        if name not in self._privileges:
            self._privileges[name] = self._closure(name, inherit_only=True)
        return self._privileges[name]

    def member_of(self, name: str) -> frozenset[str]:
        """The role and every role it is a member of, directly or not (the roles it may SET ROLE to)."""
        if name not in self._members:
            self._members[name] = self._closure(name, inherit_only=False)
        return self._members[name]

    def acts_as_owner(self, name: str, table: Table) -> bool:
        """PostgreSQL treats the role as the table's owner (for row level security too): it is the owner or
        inherits the owner's privileges."""
        return table.owner in self.privileges_of(name)

    def bypasses(self, name: str) -> bool:
        """SUPERUSER or BYPASSRLS (role attributes: never inherited through membership). An unknown role does
        not bypass."""
        r = self._roles.get(name)
        return r is not None and bypasses_rls(r)

    def rls_applies(self, name: str, table: Table) -> bool:
        """Row level security filters ``name``'s queries on ``table``: enabled, ``name`` does not bypass, and is
        not (acting as) the owner unless RLS is FORCEd."""
        if not table.rls_enabled or self.bypasses(name):
            return False
        return table.rls_forced or not self.acts_as_owner(name, table)

    def policy_applies(self, policy: Policy, name: str) -> bool:
        """The policy is one PostgreSQL applies to ``name``'s queries: TO PUBLIC, the role, or a role whose
        privileges it has."""
        if "public" in policy.roles or not policy.roles:
            return True
        return bool(self.privileges_of(name) & set(policy.roles))

    def execute_grantees(self, name: str, fn: Function) -> list[str]:
        """The grantees of EXECUTE on ``fn`` through which ``name`` may call it: itself, a role whose privileges
        it has, PUBLIC (``fn.executors``: empty in snapshot files written before dbguard read it, then none)."""
        who = self.privileges_of(name) | {"public"}
        return sorted(g for g in fn.executors if g in who)

    def reaches(self, name: str, table: Table) -> bool:
        """``name`` has a table privilege on ``table``: granted to it, to PUBLIC or to a role whose privileges
        it has, or it acts as the owner (column privileges are not in the snapshot)."""
        who = self.privileges_of(name) | {"public"}
        return self.acts_as_owner(name, table) or any(g.grantee in who for g in table.grants)


@dataclass(frozen=True)
class OwnerEscape:
    """Why a table's owner escapes its policies in a way FORCE ROW LEVEL SECURITY closes."""

    kind: str  # app_owns | app_inherits_owner | owner_login | owner_member_of_app | app_member_of_owner | config
    reason: str  # "its owner inventory_svc can log in"
    app_bypasses: bool  # the application's own queries bypass the policies (not only the owner's sessions)

    @property
    def consequence(self) -> str:
        if self.app_bypasses:
            return "the application's own queries bypass every policy of the table"
        return "every session of the owner bypasses every policy of the table"


def owner_escape(
    snapshot: Snapshot, table: Table, config: Config, graph: Optional[RoleGraph] = None
) -> Optional[OwnerEscape]:
    """Why ``table``'s owner escapes its row level security where FORCE would stop it, or None.

    - the application role (``tenant.app_role``) is the owner or inherits the owner's privileges: PostgreSQL
      treats it as the owner, so the application's own queries bypass RLS;
    - the owner can log in: whoever connects as it bypasses RLS;
    - the owner is a member of the application role (a service role that switches to the app role), or the
      application role is a member of the owner (it may SET ROLE to it).

    None when RLS is off or forced, when the application role bypasses RLS anyway (FORCE changes nothing for
    it), and, for the owner's own sessions, when the owner is SUPERUSER or BYPASSRLS: FORCE does not bind
    those roles, so nothing on the table closes that path. ``tenant.app_role_owns_tables: true`` (deprecated)
    still makes every RLS-enabled, unforced table an escape, as it did."""
    if not table.rls_enabled or table.rls_forced:
        return None
    g = graph or RoleGraph(snapshot)
    app = config.tenant.app_role
    owner = table.owner
    found: Optional[OwnerEscape] = None
    if g.bypasses(app):
        found = None
    elif owner == app:
        found = OwnerEscape("app_owns", f"the application role {app} owns it", True)
    elif g.acts_as_owner(app, table):
        found = OwnerEscape(
            "app_inherits_owner", f"the application role {app} inherits the privileges of its owner {owner}", True
        )
    elif not g.bypasses(owner):
        r = g.role(owner)
        if r is not None and r.can_login:
            found = OwnerEscape("owner_login", f"its owner {owner} can log in", False)
        elif app in g.member_of(owner):
            found = OwnerEscape(
                "owner_member_of_app", f"its owner {owner} is a member of the application role {app}", False
            )
        elif owner in g.member_of(app):
            found = OwnerEscape(
                "app_member_of_owner", f"the application role {app} may SET ROLE to its owner {owner}", False
            )
    if found is None and config.tenant.app_role_owns_tables:
        found = OwnerEscape(
            "config",
            "the configuration says the application role owns its tables "
            "(tenant.app_role_owns_tables, deprecated: dbguard reads ownership from the "
            "catalog now)",
            False,
        )
    return found
