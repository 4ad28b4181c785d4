"""Row level security is enabled but not FORCEd on a tenant table whose owner can reach it through a session:
table owners (and roles that inherit the owner's privileges) bypass every policy unless RLS is forced.

*What it checks.* Tenant tables, the tenants table and the partitions the application can reach, with RLS
enabled and not FORCEd, where, from the catalog (roles and `pg_auth_members`):

- the application role (`tenant.app_role`) owns the table, or inherits its owner's privileges (a member of the
  owner role with INHERIT): PostgreSQL treats it as the owner, so the application's own queries bypass every
  policy. This finding is **critical**;
- the owner can log in (`LOGIN`): the common setup where one service role runs the migrations, owns the tables
  and serves the application, or connects and then `SET ROLE`s to a NOLOGIN app role;
- the owner is a member of the application role, or the application role is a member of the owner (it may
  `SET ROLE` to it).

Not reported: owners that are SUPERUSER or BYPASSRLS (FORCE does not bind them: whoever connects as a
privileged role sees every row, whatever the table says, so there is nothing to fix on the table; the isolation
probe reports an application role that bypasses RLS itself), and tables with RLS FORCEd or disabled (the
latter is `rls_disabled_with_tenant_column`). The deprecated setting `tenant.app_role_owns_tables: true`
still reports every such table (as if the application role owned it); it is no longer needed.

*Why it matters.* Table owners bypass RLS unless it is forced. An application that connects as the owner, or a
service whose login role owns the tables and switches to the app role per request, reads every tenant's rows
whenever a code path forgets the switch (a background job, a migration script, a console session).

*How to fix.* `dbguard generate-migration fix-rls-policy TABLE` (it forces RLS where this rule fires), or:

```sql
-- bad: the service logs in as inventory_svc, which owns public.stock_bins
ALTER TABLE public.stock_bins ENABLE ROW LEVEL SECURITY;
-- fix
ALTER TABLE public.stock_bins FORCE ROW LEVEL SECURITY;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.roles import owner_escape
from dbguard_pipeline.text import qname

SPEC = RuleSpec(
    "rls_not_forced",
    Severity.WARNING,
    "rls",
    "RLS not forced on a table whose owner can connect",
    fix_action="fix-rls-policy",
    tags=frozenset({"weakens-table"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    app = ctx.config.tenant.app_role
    for t in ctx.rls_scope_tables:
        escape = owner_escape(ctx.snapshot, t, ctx.config, ctx.roles)
        if escape is None:
            continue
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)} has row level security enabled but not forced, and {escape.reason}: {escape.consequence}",
            f"{fix_rls_command(t, ctx.root(t))}  (or: ALTER TABLE {qname(t.schema, t.name)} FORCE ROW LEVEL SECURITY;)",
            severity=Severity.CRITICAL if escape.app_bypasses else None,
            detail={
                "owner": t.owner,
                "app_role": app,
                "reason": escape.kind,
                **({"deprecated_setting": "tenant.app_role_owns_tables"} if escape.kind == "config" else {}),
            },
        )
