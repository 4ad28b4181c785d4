"""No index leads with the foreign-key columns: joins on the key scan the table, and every delete or key update
of a parent row scans the child table while holding locks.

*What it checks.* Every foreign key of an audited table that no valid, non-partial index leads with (its
columns, in any order, as the index's leading keys). `object` is the constraint name.

*Why it matters.* Joins on the key scan the child table, and every DELETE (or key UPDATE) of a parent row scans
the child table to check the constraint, holding locks: on large tables, deletes of tenants or users slow to
a crawl.

*How to fix.* `dbguard generate-migration add-composite-index public.event_photos image_id`
(`CREATE INDEX CONCURRENTLY`).

```sql
-- bad
CREATE TABLE public.event_photos (id uuid PRIMARY KEY, image_id uuid NOT NULL REFERENCES public.vehicle_images);
-- fix
CREATE INDEX CONCURRENTLY event_photos_image_id_idx ON public.event_photos (image_id);
```
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.indexes import covering_index
from dbguard_pipeline.text import ident, qname, shell_table_arg

SPEC = RuleSpec(
    "unindexed_foreign_key",
    Severity.INFO,
    "performance",
    "Foreign key without an index",
    fix_action="add-composite-index",
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.audited_tables:
        for fk in t.foreign_keys:
            if not fk.columns or covering_index(t, fk.columns) is not None:
                continue
            cols = ", ".join(fk.columns)
            yield SPEC.finding(
                t,
                f"{qname(t.schema, t.name)}({cols}) references {qname(fk.ref_schema or '', fk.ref_table or '')} and no index leads with "
                f"{'it' if len(fk.columns) == 1 else 'them'} (constraint {ident(fk.name)})",
                f"dbguard generate-migration add-composite-index {shell_table_arg(t.schema, t.name)} "
                + " ".join(shlex.quote(c) for c in fk.columns),
                object=fk.name,
                detail={"columns": list(fk.columns)},
            )
