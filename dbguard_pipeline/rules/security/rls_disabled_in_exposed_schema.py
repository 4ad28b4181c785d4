"""A table in a schema the API exposes has row level security disabled and grants the API roles privileges on
it: anyone with the project's anon key reads it (and, with write privileges, changes it) through the API, row
by row, whatever the application means to allow.

*What it checks.* Audited tables in an exposed schema (`exposed_schemas`, default `public`) with RLS
disabled, no policy, and table privileges granted to `anon`, `authenticated` or PUBLIC: the roles every API
client has. Tables of tenant data are left to `rls_disabled_with_tenant_column` and `missing_tenant_column`,
tables with policies to `policy_exists_rls_disabled`. The finding is **critical** when a role a client has
without signing in (`anon`, PUBLIC) may write (INSERT, UPDATE, DELETE or TRUNCATE), a warning otherwise; the
detail lists each grantee's privileges. (Supabase's linter calls this `rls_disabled_in_public`.)

*Why it matters.* The rules above guard the tables that hold tenant data; the tables around them are often
global (plans, prices, feature flags, roles, invitations) and just as exposed: on Supabase, every table in
`public` is granted to `anon` and `authenticated`, and RLS is the only gate. Without it anyone can rewrite
reference data, and a table that policies or helper functions trust (an `admins` list, a role table read by
`is_admin()`) lets a user grant themselves access to every tenant.

*How to fix.* Enable RLS, then add a policy for what clients may really do (for reference data usually
`FOR SELECT` only), or revoke the API roles' privileges when only the server uses the table.

```sql
-- bad
CREATE TABLE public.plans (id text PRIMARY KEY, price_cents int NOT NULL);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.plans TO anon, authenticated;
-- fix: readable by everyone, writable by nobody through the API
ALTER TABLE public.plans ENABLE ROW LEVEL SECURITY;
CREATE POLICY plans_read ON public.plans FOR SELECT TO anon, authenticated USING (true);
-- or, when only the server reads it
REVOKE ALL ON public.plans FROM anon, authenticated;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.roles import API_GRANTEES, UNAUTHENTICATED_GRANTEES
from dbguard_pipeline.text import ident, qname, role_list

SPEC = RuleSpec(
    "rls_disabled_in_exposed_schema",
    Severity.WARNING,
    "security",
    "Table in an exposed schema without row level security",
    tags=frozenset({"weakens-table"}),
)

WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")


def check(ctx: RuleContext) -> Iterator[Finding]:
    exposed = set(ctx.config.exposed_schemas)
    for t in ctx.rls_tables:
        if t.schema not in exposed or t.rls_enabled or t.policies or ctx.in_tenant_scope(t):
            continue
        privileges: dict[str, list[str]] = {}
        for g in t.grants:
            if g.grantee in API_GRANTEES:
                privileges.setdefault(g.grantee, []).append(g.privilege)
        if not privileges:
            continue
        grantees = sorted(privileges)
        writers = sorted(r for r, privs in privileges.items() if any(p in WRITES for p in privs))
        can = "read and change" if writers else "read"
        unauthenticated = any(r in UNAUTHENTICATED_GRANTEES for r in writers)
        q = qname(t.schema, t.name)
        revoke = ", ".join("PUBLIC" if r == "public" else ident(r) for r in grantees)
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)} is in the exposed schema {ident(t.schema)} with row level security disabled: "
            f"{role_list(grantees)} can {can} every row through the API",
            f"ALTER TABLE {q} ENABLE ROW LEVEL SECURITY;  (then CREATE POLICY ... for what clients may do, e.g. "
            f"FOR SELECT TO anon, authenticated USING (true) for reference data; or REVOKE ALL ON {q} FROM {revoke};)",
            severity=Severity.CRITICAL if unauthenticated else None,
            detail={
                "grantees": grantees,
                "privileges": {r: sorted(p) for r, p in sorted(privileges.items())},
                "writers": writers,
            },
        )
