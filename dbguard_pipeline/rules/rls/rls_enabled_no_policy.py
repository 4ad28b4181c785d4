"""Row level security is enabled but no policy exists: every query by a role subject to RLS sees no rows and
every write fails. Safe, but usually not what was meant.

*What it checks.* Every audited table with RLS enabled and no policy at all. Partitions are not reported: RLS
on a partition without a policy closes it to queries that name it while queries through the partitioned table
get the parent's policies, which is the safe way to keep a partition closed.

*Why it matters.* Safe, but usually a forgotten policy: the application sees an empty table and writes fail
with "new row violates row-level security policy".

*How to fix.* For tenant tables `dbguard generate-migration fix-rls-policy TABLE`; leave it when the table
is meant to be reachable only by privileged roles.

```sql
-- as found
ALTER TABLE public.audit_log ENABLE ROW LEVEL SECURITY;   -- and no CREATE POLICY
-- fix (if the app should read its tenant's rows)
CREATE POLICY audit_log_tenant ON public.audit_log FOR SELECT TO authenticated
  USING (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid));
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import qname

SPEC = RuleSpec("rls_enabled_no_policy", Severity.INFO, "rls", "Row level security on and no policy")


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.audited_tables:
        if t.rls_enabled and not t.policies:
            remediation = (
                fix_rls_command(t)
                if ctx.in_tenant_scope(t)
                else f"CREATE POLICY ... ON {qname(t.schema, t.name)} ... (or leave it closed on purpose)"
            )
            yield SPEC.finding(
                t,
                f"{qname(t.schema, t.name)} has row level security enabled and no policy: every access by a role "
                f"subject to RLS is denied",
                remediation,
            )
