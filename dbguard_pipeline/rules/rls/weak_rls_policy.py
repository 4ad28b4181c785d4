"""A permissive policy whose USING expression is always true in any spelling (true, 1=1, (select true),
tenant_id = tenant_id, true or ...) or never compares the tenant column with the tenant context. Permissive
policies are OR-ed, so one weak policy opens the table.

*What it checks.* Every permissive SELECT, UPDATE, DELETE or ALL policy on a tenant table or on the tenants
table: its `USING` is always true in any spelling, or never ties the rows to the caller (no comparison of the
tenant column with the tenant context, and no other restriction to the caller such as an owner or a pinned
parent row). One finding per policy; `object` is the policy name. Not reported: policies only for roles that
bypass RLS anyway (`TO service_role`), and policies whose commands and roles RESTRICTIVE tenant policies all
cover. Partitions the application can reach are checked with their own policies: a query that names a
partition gets the partition's policies, not its parent's.

*Why it matters.* Permissive policies are OR-ed: one policy that lets every row through opens the whole table
to every role it names, including `anon` and PUBLIC. Typical culprits: the Supabase dashboard template
"Enable read access for all users" (`USING (true)`), `auth.role() = 'authenticated'`, `auth.uid() IS NOT NULL`,
a tenant comparison OR-ed with something that can be true on its own. An `ALL`/`UPDATE` policy without
`WITH CHECK` also lets rows be written for any tenant (said in the message; not reported a second time as
`missing_with_check`).

*How to fix.* `dbguard generate-migration fix-rls-policy TABLE` drops the weak policies and creates tenant
policies (the rollback recreates them exactly). Or pin the tenant, or add a RESTRICTIVE tenant policy.

```sql
-- bad
CREATE POLICY "Enable read access for all users" ON public.vehicles FOR SELECT USING (true);
CREATE POLICY read ON public.vehicles FOR SELECT TO authenticated USING (auth.role() = 'authenticated');
-- fix
DROP POLICY "Enable read access for all users" ON public.vehicles;
CREATE POLICY vehicles_tenant_read ON public.vehicles FOR SELECT TO authenticated
  USING (tenant_id IN (SELECT tenant_id FROM public.user_tenants WHERE user_id = (select auth.uid())));
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.rules.rls._policies import commands_text, weak_using
from dbguard_pipeline.semantics.isolation import covered_by_restrictive
from dbguard_pipeline.text import qname, quoted, role_list

SPEC = RuleSpec(
    "weak_rls_policy",
    Severity.WARNING,
    "rls",
    "Permissive policy that does not restrict rows to the tenant",
    fix_action="fix-rls-policy",
    tags=frozenset({"replaces-policy", "weakens-policy", "weakens-table"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.rls_scope_tables:
        tcol = ctx.tenant_column(t)
        for p in t.policies:
            if ctx.policy_is_moot(p):
                continue
            u = weak_using(ctx.analyzer, t, p, tcol)
            if u is None or covered_by_restrictive(ctx.analyzer, t, p, tcol, "using"):
                continue
            writes = ""
            if p.command in ("all", "update") and not p.with_check:
                writes = "; with no WITH CHECK the same expression lets rows be written for any tenant"
            yield SPEC.finding(
                t,
                f"policy {quoted(p.name)} ({commands_text(p)} to {role_list(p.roles)}) on {qname(t.schema, t.name)} {u.describe()}: "
                f"it lets every such session see every tenant's rows{writes}",
                fix_rls_command(t, ctx.root(t)),
                object=p.name,
                detail={
                    "command": p.command,
                    "roles": list(p.roles),
                    "using": p.using,
                    "parsed": u.parsed,
                    "always_true": u.always_true,
                    "parse_error": u.error,
                },
            )
