"""An INSERT, UPDATE or ALL policy whose WITH CHECK does not pin the tenant column, or that has no WITH CHECK
while its USING does not pin it either (PostgreSQL checks new rows against USING when WITH CHECK is absent,
so USING alone can be correct).

*What it checks.* Every permissive INSERT, UPDATE or ALL policy on a tenant table or on the tenants table that
lets a row be written for another tenant: its `WITH CHECK` does not pin the tenant column, or it has no
`WITH CHECK` and its `USING` (which PostgreSQL then checks new rows against) does not pin it either.
`object` is the policy name.

Not reported: `FOR ALL USING (<pinned>)` without `WITH CHECK` (the `USING` is the check: correct), a policy
already reported as `weak_rls_policy` whose only check is that same `USING`, `INSERT` policies on the tenants
table (creating a tenant writes nobody else's row), an `INSERT` policy without `WITH CHECK` (it admits no
row), and policies covered by a RESTRICTIVE policy whose check pins the tenant. Partitions the application can reach
are checked with their own policies (a statement that names a partition gets the partition's policies).

*Why it matters.* Reads can be perfectly isolated while writes are not: a user of tenant A inserts rows
into tenant B (`tenant_id` is a column the client sends), or moves their own row to B with an UPDATE.
Owner-only checks (`WITH CHECK (owner_id = auth.uid())`) do not stop it.

*How to fix.* `dbguard generate-migration fix-rls-policy TABLE`, or add a `WITH CHECK` that pins the tenant.

```sql
-- bad
CREATE POLICY insert_own ON public.invoices FOR INSERT TO authenticated WITH CHECK (true);
CREATE POLICY update_own ON public.invoices FOR UPDATE USING (tenant_id = (select public.current_tenant_id()))
  WITH CHECK (true);
-- fix
ALTER POLICY update_own ON public.invoices WITH CHECK (tenant_id = (select public.current_tenant_id()));
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.rules.rls._policies import commands_text, weak_using
from dbguard_pipeline.semantics.isolation import check_analysis, covered_by_restrictive, good_enough
from dbguard_pipeline.text import qname, quoted, role_list

SPEC = RuleSpec(
    "missing_with_check",
    Severity.WARNING,
    "rls",
    "Write policy that lets rows be written for another tenant",
    fix_action="fix-rls-policy",
    tags=frozenset({"replaces-policy", "weakens-policy", "weakens-table"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.rls_scope_tables:
        tcol = ctx.tenant_column(t)
        tenants = ctx.is_tenants_table(t)
        for p in t.policies:
            if not p.permissive or p.command not in ("insert", "update", "all") or ctx.policy_is_moot(p):
                continue
            if tenants and p.command == "insert":
                continue  # creating a tenant is not writing a row for another tenant
            if not p.with_check and p.command == "insert":
                continue  # an INSERT policy without WITH CHECK admits no row at all
            check = check_analysis(ctx.analyzer, t, p, tcol)
            if check is None or good_enough(check, tcol, strict=True):
                continue
            if not p.with_check and weak_using(ctx.analyzer, t, p, tcol) is not None:
                continue  # the same always-true / unpinned USING is reported once, as weak_rls_policy
            if covered_by_restrictive(ctx.analyzer, t, p, tcol, "check"):
                continue
            parties = ctx.party_columns(t)
            target = tcol or (" and ".join(parties) if parties else "the row's parent")
            if p.with_check:
                how = f"its WITH CHECK {check.describe()}"
            else:
                how = f"it has no WITH CHECK and its USING (checked instead) {check.describe()}"
            yield SPEC.finding(
                t,
                f"policy {quoted(p.name)} ({commands_text(p)} to {role_list(p.roles)}) on {qname(t.schema, t.name)}: {how}, so a "
                f"session can write rows whose {target} names another tenant",
                fix_rls_command(t, ctx.root(t)),
                object=p.name,
                detail={
                    "command": p.command,
                    "roles": list(p.roles),
                    "with_check": p.with_check,
                    "using": p.using,
                    "parsed": check.parsed,
                },
            )
