"""When a child row and the parent row it references carry different tenants, one tenant's data points into
another's: joins leak across tenants and deleting a tenant leaves dangling or shared rows. A composite
foreign key (tenant column, key) -> parent (tenant column, key) makes this impossible.

*What it checks.* A child row's tenant differs from the tenant of the parent row it references (one join per
foreign key between tenant tables). `object` is the constraint name.

*Why it matters.* One tenant's data points into another's: a join from the child shows the other tenant's
parent, and deleting one tenant leaves dangling or shared rows. RLS on each table does not prevent it.

*How to fix.* Correct the rows, then make it impossible with a composite foreign key on (tenant, key).

```sql
-- bad
CREATE TABLE public.vehicle_images (id uuid PRIMARY KEY, tenant_id uuid NOT NULL,
  vehicle_id uuid NOT NULL REFERENCES public.vehicles (id));
-- fix
ALTER TABLE public.vehicles ADD CONSTRAINT vehicles_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE public.vehicle_images ADD CONSTRAINT vehicle_images_vehicle_fkey
  FOREIGN KEY (tenant_id, vehicle_id) REFERENCES public.vehicles (tenant_id, id) NOT VALID;
ALTER TABLE public.vehicle_images VALIDATE CONSTRAINT vehicle_images_vehicle_fkey;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.rules.integrity._data import about, counted_references, sampled, table_metrics

SPEC = RuleSpec("cross_tenant_reference", Severity.CRITICAL, "integrity", "Rows that reference another tenant's rows",
                needs_metrics=True)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for m in table_metrics(ctx):
        for name, count, ref, cols, target in counted_references(m, m.cross_tenant):
            tcol = (ref.tenant_column if ref else None) or ctx.config.tenant.column
            yield SPEC.finding(
                (m.schema, m.table),
                f"{about(m, count)} rows reference a row of another tenant through ({cols}) -> {target}: "
                f"their {tcol} differs from the parent's{sampled(m)}",
                f"Correct the rows' {tcol} (or their parent), then enforce it with a composite foreign key "
                f"({tcol}, {cols}) -> {ref.ref_table if ref else 'parent'}({tcol}, "
                f"{', '.join(ref.ref_columns) if ref else 'id'}) backed by a unique index on the parent.",
                object=name,
                detail={"rows": count, "columns": list(ref.columns) if ref else [name], "references": target,
                        "estimated": m.estimated})
