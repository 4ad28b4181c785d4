"""A reference that no foreign key enforces (a NOT VALID foreign key, a tenant column without a foreign key, a
<name>_id column without one) lets rows point at parents that do not exist: joins drop them, tenant paths
through them break, and the foreign key can never be validated until they are fixed.

*What it checks.* Rows whose reference points at a parent that does not exist: a `NOT VALID` foreign key, a
tenant column without a foreign key, or a `<name>_id` column no foreign key enforces. One anti-join per
reference. `object` is the constraint (or reference) name.

*Why it matters.* Joins silently drop those rows, tenant paths through them break, and the foreign key can
never be validated until they are fixed.

*How to fix.* Delete or re-parent the rows, then validate the constraint or add the missing foreign key
(`dbguard generate-migration add-foreign-key TABLE [REFTABLE]`).

```sql
-- found
SELECT count(*) FROM public.event_photos p WHERE NOT EXISTS (SELECT 1 FROM public.vehicle_images i WHERE i.id = p.image_id);
-- fix
DELETE FROM public.event_photos p WHERE NOT EXISTS (SELECT 1 FROM public.vehicle_images i WHERE i.id = p.image_id);
ALTER TABLE public.event_photos VALIDATE CONSTRAINT event_photos_image_id_fkey;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.rules.integrity._data import about, counted_references, sampled, table_arg, table_metrics

SPEC = RuleSpec("orphaned_rows", Severity.CRITICAL, "integrity", "Rows whose parent does not exist", needs_metrics=True)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for m in table_metrics(ctx):
        for name, count, ref, cols, target in counted_references(m, m.orphans):
            if ref is not None and ref.kind == "foreign_key_not_valid":
                fix = (f"Delete or re-parent the orphaned rows, then validate the constraint: ALTER TABLE ... "
                       f"VALIDATE CONSTRAINT {name};")
                why = f"the foreign key {name} is NOT VALID"
            else:
                fix = (f"Delete or re-parent the orphaned rows, then add the missing foreign key: "
                       f"dbguard generate-migration add-foreign-key {table_arg(m)} "
                       f"{ref.ref_table if ref else ''}".rstrip())
                why = "no foreign key enforces it"
            yield SPEC.finding(
                (m.schema, m.table),
                f"{about(m, count)} rows reference a missing row: ({cols}) -> {target}, {why}{sampled(m)}",
                fix, object=name,
                detail={"orphans": count, "columns": list(ref.columns) if ref else [name],
                        "references": target, "kind": ref.kind if ref else None, "estimated": m.estimated})
