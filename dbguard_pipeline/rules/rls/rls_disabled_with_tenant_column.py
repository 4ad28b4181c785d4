"""The table has the tenant column (for the tenants table: its key) but row level security is disabled, so nothing
stops one tenant from reading or changing another tenant's rows.

*What it checks.* Every audited table with the tenant column. The tenants table counts too (its key is its
tenant column): without RLS, every client lists (and, with Supabase's default grants, changes) every tenant.
The message names the API roles (`anon`, `authenticated`, PUBLIC) that have privileges on the table.

*Why it matters.* Without RLS, every role with table privileges (on Supabase: `anon` and `authenticated`,
through the API) reads and changes every tenant's rows. The tenant column promises an isolation the database
does not enforce.

*How to fix.* `dbguard generate-migration fix-rls-policy public.garages` enables RLS and creates tenant
policies for every command (with `USING` and `WITH CHECK`).

```sql
-- bad
CREATE TABLE public.garages (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants, name text);
-- fix
ALTER TABLE public.garages ENABLE ROW LEVEL SECURITY;
CREATE POLICY garages_tenant_isolation ON public.garages FOR ALL TO authenticated
  USING (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid))
  WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid));
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.roles import API_GRANTEES
from dbguard_pipeline.text import role_list

SPEC = RuleSpec("rls_disabled_with_tenant_column", Severity.CRITICAL, "rls", "Tenant table without row level security",
                fix_action="fix-rls-policy", tags=frozenset({"weakens-table"}))


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.audited_tables:
        col = ctx.tenant_column(t)  # the tenants table counts too: its key is its tenant column
        if t.rls_enabled or col is None:
            continue
        exposed = role_list(sorted({g.grantee for g in t.grants if g.grantee in API_GRANTEES}))
        who = f" ({exposed} can query it)" if exposed else ""
        yield SPEC.finding(
            t, f"{t.qualified} has the tenant column {col} but row level security is disabled{who}: "
               f"every session sees and changes every tenant's rows",
            fix_rls_command(t), detail={"grantees": exposed})
