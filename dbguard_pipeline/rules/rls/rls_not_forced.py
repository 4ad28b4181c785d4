"""Table owners bypass row level security unless it is FORCEd. When the application connects as the role that
owns its tables, its policies never apply.

*What it checks.* Tenant tables (and the tenants table) with RLS enabled but not FORCEd, owned by the role the
application connects as (`tenant.app_role`, or every table when `tenant.app_role_owns_tables: true`).

*Why it matters.* Table owners bypass RLS unless it is forced. An application that connects as the owner
(common outside Supabase: one role creates the schema and serves the app) never meets its own policies.

*How to fix.* `dbguard generate-migration fix-rls-policy TABLE` (forces RLS when the config says the app
role owns its tables), or:

```sql
-- bad: the app connects as app_owner, which owns public.orders
ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
-- fix
ALTER TABLE public.orders FORCE ROW LEVEL SECURITY;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import qname

SPEC = RuleSpec("rls_not_forced", Severity.WARNING, "rls", "RLS not forced on a table the application role owns",
                fix_action="fix-rls-policy", tags=frozenset({"weakens-table"}))


def check(ctx: RuleContext) -> Iterator[Finding]:
    app = ctx.config.tenant.app_role
    for t in ctx.tenant_scope_tables:
        if not t.rls_enabled or t.rls_forced:
            continue
        if not (ctx.config.tenant.app_role_owns_tables or t.owner == app):
            continue
        yield SPEC.finding(
            t, f"{t.qualified} is owned by {t.owner}, the role the application connects as, and row level "
               f"security is not forced: the owner bypasses every policy",
            f"{fix_rls_command(t)}  (or: ALTER TABLE {qname(t.schema, t.name)} FORCE ROW LEVEL SECURITY;)",
            detail={"owner": t.owner, "app_role": app})
