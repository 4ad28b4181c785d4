"""The table holds tenant data (it reaches a tenant table through foreign keys) but has no tenant column, so row
level security cannot isolate it without a join, and every query must remember the join.

*What it checks.* Every audited table without the tenant column that reaches a table with it (or the tenants
table) through foreign keys. The message and the detail show the shortest foreign-key path. Two-party tables
(rows naming two tenants, such as `buyer_org_id` and `seller_org_id`) are not single-tenant data: they are
reported by `two_party_table` instead.

*Why it matters.* Its rows can only be isolated through a join to the parent, in every policy and every
query; the common result is no RLS at all on the child table (`conversation_messages` readable by everyone
while `conversations` is isolated), and no cheap way to export or delete one tenant's data.

*How to fix.* `dbguard generate-migration add-tenant-isolation public.conversation_messages`: adds the column,
backfills it through the foreign-key path in batches, adds the foreign key, the index, RLS and the policy.

```sql
-- bad
CREATE TABLE public.conversation_messages (id uuid PRIMARY KEY,
  conversation_id uuid NOT NULL REFERENCES public.conversations, body text);
-- fix (what the migration does, in safe steps)
ALTER TABLE public.conversation_messages ADD COLUMN tenant_id uuid;
UPDATE public.conversation_messages m SET tenant_id = c.tenant_id FROM public.conversations c WHERE c.id = m.conversation_id;
-- then: NOT NULL via a validated CHECK, FOREIGN KEY ... NOT VALID + VALIDATE, CREATE INDEX CONCURRENTLY,
-- ENABLE ROW LEVEL SECURITY, CREATE POLICY ... USING/WITH CHECK (tenant_id = <context>)
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import qname, shell_table_arg

SPEC = RuleSpec(
    "missing_tenant_column",
    Severity.CRITICAL,
    "tenancy",
    "Tenant data without a tenant column",
    fix_action="add-tenant-isolation",
    tags=frozenset({"weakens-table"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    col = ctx.config.tenant.column
    for t in ctx.audited_tables:
        if ctx.has_tenant_column(t) or not ctx.is_tenant_table(t) or ctx.party_columns(t):
            continue
        path = ctx.tenant_path(t) or []
        hops = " -> ".join(f"{s.child.name}.{','.join(s.constraint.columns)}" for s in path)
        end = path[-1].parent.qualified if path else "?"
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)} holds tenant data (it reaches {end} through {hops}) but has no {col} column",
            f"dbguard generate-migration add-tenant-isolation {shell_table_arg(t.schema, t.name)}",
            detail={
                "path": [f"{s.child.qualified}({','.join(s.constraint.columns)}) -> {s.parent.qualified}" for s in path]
            },
        )
