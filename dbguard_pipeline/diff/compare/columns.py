"""Columns of a table (their position is not compared)."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, pairs, table_item
from dbguard_pipeline.diff.result import ADDED, CHANGED, REMOVED, Change
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.semantics.tenancy import has_tenant_column
from dbguard_pipeline.semantics.weakening import tenant_column_dropped, tenant_column_weakening


def compare_columns(ctx: Context, ta: Table, tb: Table) -> Iterator[Change]:
    tenant_col = ctx.config.tenant.column if has_tenant_column(ta, ctx.config) else None
    for name, old, new in pairs(ta.columns, tb.columns, lambda c: c.name):
        if old is None:
            yield table_item(tb, ADDED, "column", name, after=new)
        elif new is None:
            yield table_item(tb, REMOVED, "column", name, before=old).weaken(*tenant_column_dropped(name == tenant_col))
        else:
            changed = attrs(old, new, ("type", "not_null", "default", "identity", "generated"))
            if changed:
                yield table_item(tb, CHANGED, "column", name, attributes=changed).weaken(
                    *tenant_column_weakening(name == tenant_col, old, new)
                )
