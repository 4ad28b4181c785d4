"""A row with a NULL tenant belongs to no tenant: policies comparing the tenant column never match it (invisible
data) or, with careless policies (IS NULL branches, coalesce), match it for everyone.

*What it checks.* Every audited table whose tenant column allows NULL. `object` is the column.
`tenant_coverage` measures how many such rows exist; this rule says the schema allows them.

*Why it matters.* A row with a NULL tenant belongs to nobody: `tenant_id = <ctx>` never matches it (invisible
data), and careless policies (`tenant_id IS NULL OR ...`, `coalesce`) show it to everyone.

*How to fix.* Backfill, then forbid NULLs without a long lock:

```sql
-- bad
CREATE TABLE public.notes (id int PRIMARY KEY, tenant_id uuid REFERENCES public.tenants);
-- fix
ALTER TABLE public.notes ADD CONSTRAINT notes_tenant_id_not_null CHECK (tenant_id IS NOT NULL) NOT VALID;
ALTER TABLE public.notes VALIDATE CONSTRAINT notes_tenant_id_not_null;
ALTER TABLE public.notes ALTER COLUMN tenant_id SET NOT NULL;   -- uses the validated check, no table scan
ALTER TABLE public.notes DROP CONSTRAINT notes_tenant_id_not_null;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import ident, qname

SPEC = RuleSpec(
    "tenant_column_nullable",
    Severity.WARNING,
    "tenancy",
    "Tenant column allows NULL",
    tags=frozenset({"weakens-table"}),
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    col = ctx.config.tenant.column
    for t in ctx.audited_tables:
        c = t.column(col) if ctx.has_tenant_column(t) else None
        if c is None or c.not_null:
            continue
        q = qname(t.schema, t.name)
        check = ident(f"{t.name}_{col}_not_null"[:63])
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)}.{ident(col)} allows NULL: such rows belong to no tenant",
            f"ALTER TABLE {q} ADD CONSTRAINT {check} CHECK ({ident(col)} IS NOT NULL) NOT VALID; "
            f"ALTER TABLE {q} VALIDATE CONSTRAINT {check}; ALTER TABLE {q} ALTER COLUMN {ident(col)} SET NOT NULL; "
            f"ALTER TABLE {q} DROP CONSTRAINT {check};",
            object=col,
        )
