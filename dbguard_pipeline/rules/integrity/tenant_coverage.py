"""Rows whose tenant column is NULL belong to no tenant: tenant policies hide them from everyone (or show them
to everyone, depending on how the policy treats NULL) and they escape per-tenant exports and deletions.
Coverage is the share of rows with a tenant; it must reach config.coverage_threshold (default 100%).

*What it checks.* Rows whose tenant column is NULL, when the share of rows with a tenant is below
`coverage_threshold` (default 100%). Measured in one scan per table (TABLESAMPLE above `sample_row_limit`,
marked as estimated). `object` is the tenant column.

*Why it matters.* Those rows belong to no tenant: hidden from everyone by correct policies, shown to everyone
by careless ones, and missed by per-tenant exports and deletions (GDPR requests).

*How to fix.* Assign each row its tenant (backfill from the parent it belongs to) or delete it, then forbid
NULLs (see `tenant_column_nullable`).

```sql
-- found
SELECT count(*) FILTER (WHERE tenant_id IS NULL), count(*) FROM public.vehicles;   -- 3 of 22
-- fix
UPDATE public.vehicles v SET tenant_id = g.tenant_id FROM public.garages g
  WHERE v.tenant_id IS NULL AND g.id = v.garage_id;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.rules.integrity._data import about, sampled, table_metrics

SPEC = RuleSpec("tenant_coverage", Severity.CRITICAL, "integrity", "Rows without a tenant", needs_metrics=True)


def check(ctx: RuleContext) -> Iterator[Finding]:
    threshold = ctx.config.coverage_threshold
    for m in table_metrics(ctx):
        if m.tenant_column is None or m.rows is None or m.tenant_nulls is None or m.rows == 0:
            continue
        pct = m.coverage_percent
        if m.tenant_nulls == 0 or pct >= threshold:
            continue
        col = m.tenant_column
        yield SPEC.finding(
            (m.schema, m.table),
            f"{about(m, m.tenant_nulls)} of {m.rows:,} rows have no {col}: tenant coverage {pct:.1f}%, below "
            f"the {threshold:g}% threshold{sampled(m)}",
            f"Assign the rows their tenant (backfill {col} from the parent row they belong to, or delete them), "
            f"then forbid NULLs: ALTER TABLE ... ADD CHECK ({col} IS NOT NULL) NOT VALID, VALIDATE it, and "
            f"SET NOT NULL.",
            object=col,
            detail={"rows": m.rows, "without_tenant": m.tenant_nulls, "percent": round(pct, 4),
                    "threshold": threshold, "estimated": m.estimated})
