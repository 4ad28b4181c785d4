"""Constraints of a table; a foreign key that ties the table to its tenant is watched."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, pairs, table_item
from dbguard_pipeline.diff.result import ADDED, CHANGED, REMOVED, Change
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.semantics.weakening import tenant_fk_weakening, ties_to_tenant

ATTRIBUTES = ("kind", "definition", "validated")


def compare_constraints(ctx: Context, ta: Table, tb: Table) -> Iterator[Change]:
    for name, old, new in pairs(ta.constraints, tb.constraints, lambda c: c.name):
        if old is None:
            yield table_item(tb, ADDED, "constraint", name, after=new)
        elif new is None:
            tied = ties_to_tenant(old, ctx.a, ta, ctx.config)
            yield table_item(tb, REMOVED, "constraint", name, before=old).weaken(
                *tenant_fk_weakening(tied, old, None, False)
            )
        else:
            changed = attrs(old, new, ATTRIBUTES)
            if changed:
                tied = ties_to_tenant(old, ctx.a, ta, ctx.config)
                still = tied and ties_to_tenant(new, ctx.b, tb, ctx.config)
                yield table_item(tb, CHANGED, "constraint", name, attributes=changed).weaken(
                    *tenant_fk_weakening(tied, old, new, still)
                )
