"""The table has the tenant column (for the tenants table: its key) but row level security is disabled, so nothing
stops one tenant from reading or changing another tenant's rows.

*What it checks.* Every audited table with the tenant column, and every two-party table (rows naming two
tenants, see `two_party_table`), whose remediation is then SQL: enable RLS and pin each party. The tenants table counts too (its key is its
tenant column): without RLS, every client lists (and, with Supabase's default grants, changes) every tenant.
The message names the API roles (`anon`, `authenticated`, PUBLIC) that have privileges on the table.

Partitions count as tables of their own, at every level (a sub-partitioned partition and a default partition
too), when the application can reach them: the app role, an API role or PUBLIC has a privilege on the partition
(`GRANT ... ON ALL TABLES IN SCHEMA` grants the partitions too). PostgreSQL applies the row level security of
the table a query names: RLS enabled (even FORCEd) on the partitioned parent does not apply to
`SELECT ... FROM the_partition`. Inheritance children (`INHERITS`) are plain tables and always audited.
Data metrics still count a partitioned table's rows once, through its root.

*Why it matters.* Without RLS, every role with table privileges (on Supabase: `anon` and `authenticated`,
through the API) reads and changes every tenant's rows. The tenant column promises an isolation the database
does not enforce.

*How to fix.* `dbguard generate-migration fix-rls-policy public.garages` enables RLS and creates tenant
policies for every command (with `USING` and `WITH CHECK`). For a partition: the same command on its root
partitioned table, or enable RLS on the partition without a policy (queries that name it see nothing, queries
through the parent are unchanged), or revoke the application's privileges on it.

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
from dbguard_pipeline.text import qname, role_list

SPEC = RuleSpec(
    "rls_disabled_with_tenant_column",
    Severity.CRITICAL,
    "rls",
    "Tenant table without row level security",
    fix_action="fix-rls-policy",
    tags=frozenset({"weakens-table"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.rls_tables:
        col = ctx.tenant_column(t)  # the tenants table counts too: its key is its tenant column
        parties = ctx.party_columns(t) if col is None else ()
        if t.rls_enabled or (col is None and not parties):
            continue
        if parties:  # two-party rows: every tenant they name
            col = " and ".join(parties)
        root = ctx.root(t)
        grantees = {g.grantee for g in t.grants if g.grantee in API_GRANTEES}
        if root is not t and ctx.roles.reaches(ctx.config.tenant.app_role, t):
            grantees.add(ctx.config.tenant.app_role)  # why the partition is audited at all
        exposed = role_list(sorted(grantees))
        who = f" ({exposed} can query it)" if exposed else ""
        detail: dict[str, object] = {"grantees": exposed}
        if root is not t:
            detail["partition_of"] = root.qualified
        if root is t:
            message = (
                f"{qname(t.schema, t.name)} has the tenant column {col} but row level security is disabled{who}: "
                f"every session sees and changes every tenant's rows"
            )
        else:
            message = (
                f"{qname(t.schema, t.name)} is a partition of {qname(root.schema, root.name)} with the tenant column {col} and row "
                f"level security disabled{who}: a query that names the partition gets its own row level "
                f"security, not {qname(root.schema, root.name)}'s, so every such session sees and changes every tenant's "
                f"rows through it"
            )
        fix = fix_rls_command(t, root)
        if parties:
            detail["parties"] = list(parties)
            ctx_sql = "<tenant context>"
            fix = (
                f"ALTER TABLE {qname(t.schema, t.name)} ENABLE ROW LEVEL SECURITY; and a policy that pins each party: "
                f"USING ({' OR '.join(f'{c} = {ctx_sql}' for c in parties)}) (dbguard does not write policies of "
                "two-party tables)"
            )
        yield SPEC.finding(t, message, fix, detail=detail)
