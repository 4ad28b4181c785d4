"""Without the foreign key, rows can name tenants that do not exist (typos, deleted tenants), and deleting a
tenant leaves its rows behind.

*What it checks.* Every audited table whose tenant column has no foreign key to the tenants table
(`tenant.tenants_table`, key `tenant.tenants_key`). A `NOT VALID` foreign key counts (its rows are checked by
`orphaned_rows`). `object` is the column.

*Why it matters.* Rows can name tenants that do not exist (typos, deleted tenants), and deleting a tenant
leaves its rows behind, visible to whoever gets that id next.

*How to fix.* `dbguard generate-migration add-foreign-key public.vehicle_spec_enhancements public.tenants`
(reports orphans first; adds the key `NOT VALID`, then validates it).

```sql
-- bad
CREATE TABLE public.vehicle_spec_enhancements (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, ...);
-- fix
ALTER TABLE public.vehicle_spec_enhancements ADD CONSTRAINT vehicle_spec_enhancements_tenant_id_fkey
  FOREIGN KEY (tenant_id) REFERENCES public.tenants (id) NOT VALID;
ALTER TABLE public.vehicle_spec_enhancements VALIDATE CONSTRAINT vehicle_spec_enhancements_tenant_id_fkey;
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import ident, qname, shell_table_arg

SPEC = RuleSpec(
    "tenant_fk_missing",
    Severity.WARNING,
    "tenancy",
    "Tenant column without a foreign key to the tenants table",
    fix_action="add-foreign-key",
)


def _references_tenants(t: Table, config: Config) -> bool:
    col, key = config.tenant.column, config.tenant.tenants_key
    for fk in t.foreign_keys:
        if (fk.ref_schema, fk.ref_table) != (config.tenant.tenants_schema, config.tenant.tenants_name):
            continue
        if dict(zip(fk.columns, fk.ref_columns, strict=False)).get(col) == key:
            return True
    return False


def check(ctx: RuleContext) -> Iterator[Finding]:
    tm = ctx.config.tenant
    tenants = qname(tm.tenants_schema, tm.tenants_name)
    exists = ctx.snapshot.table(tm.tenants_qualified) is not None
    for t in ctx.audited_tables:
        if not ctx.has_tenant_column(t) or _references_tenants(t, ctx.config):
            continue
        note = "" if exists else f" (the tenants table {tenants} does not exist: check tenant.tenants_table)"
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)}.{ident(tm.column)} has no foreign key to {tenants}({tm.tenants_key}){note}",
            f"dbguard generate-migration add-foreign-key {shell_table_arg(t.schema, t.name)} "
            f"{shell_table_arg(tm.tenants_schema, tm.tenants_name)}",
            object=tm.column,
        )
