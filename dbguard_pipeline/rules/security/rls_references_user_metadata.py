"""user_metadata in a Supabase JWT (raw_user_meta_data in auth.users) is editable by the user
(supabase.auth.updateUser). A policy that takes the tenant or a role from it lets any user pick their tenant.
Use app_metadata, which only the server can write, or a membership table.

*What it checks.* A policy (or a function it calls) reads `user_metadata` from the JWT
(`auth.jwt() -> 'user_metadata'`, `#>> '{user_metadata,...}'`) or `auth.users.raw_user_meta_data`.
`object` is the policy name.

*Why it matters.* On Supabase any signed-in user can change their own `user_metadata`
(`supabase.auth.updateUser({ data: { tenant_id: '...' } })`); the next token carries it. A policy that takes
the tenant or a role from it lets every user choose their tenant. (Supabase linter 0015.)

*How to fix.* Read the claim from `app_metadata` (only the server can write it) or from a membership table.

```sql
-- bad
USING (tenant_id = ((select auth.jwt()) -> 'user_metadata' ->> 'tenant_id')::uuid)
-- fix
USING (tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid)
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command, policies_with
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import qname, quoted

SPEC = RuleSpec(
    "rls_references_user_metadata",
    Severity.CRITICAL,
    "security",
    "Policy trusts user_metadata",
    tags=frozenset({"weakens-policy", "weakens-table"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t, p, refs in policies_with(ctx, lambda a: a.user_metadata):
        fix = "read the claim from app_metadata (auth.jwt() -> 'app_metadata' ->> '...') or a membership table"
        if ctx.in_tenant_scope(t):
            fix = f"{fix_rls_command(t)}  (or {fix})"
        yield SPEC.finding(
            t,
            f"policy {quoted(p.name)} on {qname(t.schema, t.name)} trusts user-editable metadata ({'; '.join(refs)}): "
            f"any user can change it and reach other tenants' rows",
            fix,
            object=p.name,
            detail={"references": refs},
        )
