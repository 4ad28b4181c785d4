"""Roles: which bypass row level security, and which are the API's (Supabase PostgREST) roles."""
from __future__ import annotations

from dbguard_pipeline.model.schema import Policy, Role, Snapshot

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
