"""A policy casts current_setting(...) to a non-text type without nullif. Once the setting has been set in a
session and reset (connection pools, SET LOCAL), it reads as '' and ''::uuid raises an error, so queries fail
instead of returning no rows.

*What it checks.* Every policy of an audited table whose `USING` or `WITH CHECK` casts `current_setting(...)`
to a non-text type (`::uuid`, `::bigint`, `::jsonb`, `CAST(... AS ...)`) without `nullif`, directly or inside
a function it calls. `object` is the policy name.

*Why it matters.* Once a setting has been set in a session and then reset (connection pools, `SET LOCAL`,
`set_config(..., true)` at the end of a transaction), `current_setting(name, true)` returns `''`, not NULL,
and `''::uuid` raises `invalid input syntax for type uuid`: every query on the table fails instead of
returning no rows.

*How to fix.* `dbguard generate-migration fix-rls-policy TABLE`, or wrap the setting in `nullif`.

```sql
-- bad
USING (tenant_id = current_setting('app.current_tenant_id', true)::uuid)
-- fix
USING (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid))
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
    "tenant_context_cast_unsafe",
    Severity.WARNING,
    "rls",
    "current_setting() cast without nullif",
    fix_action="fix-rls-policy",
    tags=frozenset({"replaces-policy"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    guc = ctx.config.tenant.guc
    for t, p, casts in policies_with(ctx, lambda a: a.unsafe_casts):
        remediation = (
            fix_rls_command(t)
            if ctx.in_tenant_scope(t)
            else f"wrap the setting in nullif: (select nullif(current_setting('{guc}', true), '')::uuid)"
        )
        yield SPEC.finding(
            t,
            f"policy {quoted(p.name)} on {qname(t.schema, t.name)} casts {', '.join(casts)} without nullif: the query "
            f"raises an error once the setting is reset to ''",
            remediation,
            object=p.name,
            detail={"casts": casts},
        )
