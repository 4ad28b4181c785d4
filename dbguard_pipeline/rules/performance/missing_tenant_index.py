"""Every policy filters on the tenant column; without an index that leads with it, every query of a large table
scans all tenants' rows.

*What it checks.* No valid, non-partial index leads with the tenant column, on a table above
`tenant_index_min_rows` rows (default 10,000; measured rows when data metrics were taken, else the catalog
estimate, summed over the partitions of a partitioned table; never-analysed tables are not guessed).
`object` is the tenant column.

*Why it matters.* Every policy filters on the tenant column: without an index, every query of the table scans
all tenants' rows, and the cost grows with the biggest tenant, not with the caller's.

*How to fix.* `dbguard generate-migration add-composite-index public.orders tenant_id` (add the columns your
queries filter or sort on next, e.g. `tenant_id created_at`).

```sql
-- fix
CREATE INDEX CONCURRENTLY orders_tenant_id_idx ON public.orders (tenant_id);
```
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
from typing import Optional

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.indexes import covering_index
from dbguard_pipeline.text import qname, shell_table_arg

SPEC = RuleSpec(
    "missing_tenant_index",
    Severity.WARNING,
    "performance",
    "No index leads with the tenant column",
    fix_action="add-composite-index",
)


def _rows(ctx: RuleContext, table: Table) -> tuple[Optional[int], str]:
    """The table's row count and where it comes from: measured, estimated (the catalog) or unknown."""
    m = ctx.metrics.get(table.qualified) if ctx.metrics else None
    if m is not None:
        rows = m.get("rows") if isinstance(m, Mapping) else getattr(m, "rows", None)
        if rows is not None:
            return int(rows), "measured"
    if table.kind == "partitioned":
        total, known = 0, False
        todo = [table.qualified]
        while todo:
            parent = todo.pop()
            for p in ctx.snapshot.tables:
                if p.parent == parent:
                    if p.kind == "partitioned":
                        todo.append(p.qualified)
                    elif p.row_estimate >= 0:
                        total += p.row_estimate
                        known = True
        return (total, "estimated") if known else (None, "unknown")
    if table.row_estimate < 0:
        return None, "unknown"
    return table.row_estimate, "estimated"


def check(ctx: RuleContext) -> Iterator[Finding]:
    col = ctx.config.tenant.column
    threshold = ctx.config.tenant_index_min_rows
    for t in ctx.audited_tables:
        if not ctx.has_tenant_column(t) or covering_index(t, (col,)) is not None:
            continue
        rows, how = _rows(ctx, t)
        if rows is None or rows < threshold:
            continue
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)} has {rows:,} rows ({how}) and no index leads with {col}: tenant-filtered queries "
            f"scan the whole table",
            f"dbguard generate-migration add-composite-index {shell_table_arg(t.schema, t.name)} {shlex.quote(col)}",
            object=col,
            detail={"rows": rows, "rows_source": how, "threshold": threshold},
        )
