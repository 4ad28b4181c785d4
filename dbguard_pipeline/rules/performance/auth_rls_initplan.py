"""auth.uid(), auth.jwt(), auth.role(), auth.email() or current_setting() called directly in a policy is
evaluated for every row. Wrapped in a scalar subquery, (select auth.uid()), PostgreSQL evaluates it once per
query (an initPlan).

*What it checks.* Every policy of an audited table that calls `auth.uid()`, `auth.jwt()`, `auth.role()`,
`auth.email()` or `current_setting()` outside a scalar subquery. `object` is the policy name.

*Why it matters.* PostgreSQL then evaluates the call for every row the query touches (and inside a membership
subquery, possibly once per outer row). Wrapped in `(select ...)` it becomes an initPlan evaluated once per
query; on large tables the difference is orders of magnitude (Supabase's advice and linter 0003).

*How to fix.* `dbguard generate-migration fix-rls-policy TABLE` for tenant tables, or rewrite the policy with
each call wrapped.

```sql
-- bad
CREATE POLICY own ON public.notes USING (owner_id = auth.uid());
-- fix
ALTER POLICY own ON public.notes USING (owner_id = (select auth.uid()));
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command, policies_with
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import ident, qname, quoted

SPEC = RuleSpec(
    "auth_rls_initplan",
    Severity.WARNING,
    "performance",
    "Auth function evaluated per row in a policy",
    fix_action="fix-rls-policy",
    tags=frozenset({"replaces-policy"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t, p, calls in policies_with(ctx, lambda a: a.per_row_calls):
        wrapped = ", ".join(
            f"(select {c})" if c != "current_setting()" else "(select current_setting(...))" for c in calls
        )
        fix = f"ALTER POLICY {ident(p.name)} ON {qname(t.schema, t.name)} ... with each call wrapped: {wrapped}"
        if ctx.in_tenant_scope(t):
            fix = f"{fix_rls_command(t)}  (or: {fix})"
        yield SPEC.finding(
            t,
            f"policy {quoted(p.name)} on {qname(t.schema, t.name)} calls {', '.join(calls)} outside a scalar subquery: "
            f"evaluated once per row instead of once per query",
            fix,
            object=p.name,
            detail={"calls": calls},
        )
