"""Policies were written for the table but row level security is disabled, so none of them applies.

*What it checks.* Every audited table with at least one policy and RLS disabled, tenant data or not, and every
partition the application can reach that has policies of its own and RLS disabled.

*Why it matters.* Someone wrote the isolation and it silently does nothing: a classic after a restore, a
`DISABLE ROW LEVEL SECURITY` during a data fix, or a table created by a migration that forgot the `ENABLE`.

*How to fix.* For tenant tables `dbguard generate-migration fix-rls-policy TABLE`; otherwise enable RLS.

```sql
-- bad
CREATE POLICY docs_tenant ON public.docs USING (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid));
-- (RLS never enabled)
-- fix
ALTER TABLE public.docs ENABLE ROW LEVEL SECURITY;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import ident, qname

SPEC = RuleSpec(
    "policy_exists_rls_disabled",
    Severity.CRITICAL,
    "rls",
    "Policies exist but row level security is off",
    fix_action="fix-rls-policy",
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.rls_tables:
        if t.rls_enabled or not t.policies:
            continue
        names = ", ".join(ident(p.name) for p in t.policies)
        remediation = (
            fix_rls_command(t, ctx.root(t))
            if ctx.in_tenant_scope(t)
            else f"ALTER TABLE {qname(t.schema, t.name)} ENABLE ROW LEVEL SECURITY;"
        )
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)} has {len(t.policies)} polic{'y' if len(t.policies) == 1 else 'ies'} ({names}) "
            f"but row level security is disabled: none of them is enforced",
            remediation,
            detail={"policies": [p.name for p in t.policies]},
        )
