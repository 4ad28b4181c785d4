"""Columns listed under required_columns in dbguard.yaml must hold a value in every row; the database does not
enforce it (no NOT NULL), so the data must be checked.

*What it checks.* A column listed under `required_columns` in `dbguard.yaml` holds NULLs. `object` is the
column.

*Why it matters.* The application relies on the value (a status, an owner, a timestamp); NULLs break
reports, state machines and exports.

*How to fix.* Fill the NULLs, then enforce `NOT NULL` through a validated check.

```yaml
# dbguard.yaml
required_columns:
  public.vehicles: [vin, make]
```
```sql
UPDATE public.vehicles SET make = 'unknown' WHERE make IS NULL;
ALTER TABLE public.vehicles ADD CONSTRAINT vehicles_make_not_null CHECK (make IS NOT NULL) NOT VALID;
ALTER TABLE public.vehicles VALIDATE CONSTRAINT vehicles_make_not_null;
ALTER TABLE public.vehicles ALTER COLUMN make SET NOT NULL;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.rules.integrity._data import about, sampled, table_metrics

SPEC = RuleSpec("null_violation", Severity.CRITICAL, "integrity", "NULLs in a column the config marks required",
                needs_metrics=True)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for m in table_metrics(ctx):
        for col, count in sorted(m.null_counts.items()):
            if not count:
                continue
            total = f" of {m.rows:,}" if m.rows is not None else ""
            yield SPEC.finding(
                (m.schema, m.table),
                f"{about(m, count)}{total} rows have NULL in required column {col}{sampled(m)}",
                f"Fill the NULLs in {col}, then enforce it: ALTER TABLE ... ADD CHECK ({col} IS NOT NULL) "
                f"NOT VALID; VALIDATE CONSTRAINT; ALTER COLUMN {col} SET NOT NULL.",
                object=col, detail={"nulls": count, "rows": m.rows, "estimated": m.estimated})
