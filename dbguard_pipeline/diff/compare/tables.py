"""Tables: added, removed, or their own attributes changed; then each kind of item inside a table has its
comparer (row level security, columns, constraints, indexes, policies, grants)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, pairs, table_item
from dbguard_pipeline.diff.compare.columns import compare_columns
from dbguard_pipeline.diff.compare.constraints import compare_constraints
from dbguard_pipeline.diff.compare.grants import compare_table_grants
from dbguard_pipeline.diff.compare.indexes import compare_indexes
from dbguard_pipeline.diff.compare.policies import compare_policies
from dbguard_pipeline.diff.compare.rls import compare_rls
from dbguard_pipeline.diff.result import ADDED, CHANGED, REMOVED, Change
from dbguard_pipeline.model.schema import Table

TableComparer = Callable[[Context, Table, Table], Iterable[Change]]


def compare_table_attributes(ctx: Context, ta: Table, tb: Table) -> Iterator[Change]:
    changed = attrs(ta, tb, ("kind", "parent", "owner", "comment"))
    if changed:
        yield table_item(tb, CHANGED, "table", attributes=changed)


# Each comparer of what a table holds, for a table on both sides.
TABLE_COMPARERS: tuple[TableComparer, ...] = (
    compare_table_attributes,
    compare_rls,
    compare_columns,
    compare_constraints,
    compare_indexes,
    compare_policies,
    compare_table_grants,
)


def compare_tables(ctx: Context) -> Iterator[Change]:
    for (schema, name), old, new in pairs(
        (t for t in ctx.a.tables if ctx.in_scope(t.schema)),
        (t for t in ctx.b.tables if ctx.in_scope(t.schema)),
        lambda t: (t.schema, t.name),
    ):
        if old is None:
            yield Change("table", schema, name, ADDED, "table", after=new)
        elif new is None:
            yield Change("table", schema, name, REMOVED, "table", before=old)
        else:
            for comparer in TABLE_COMPARERS:
                yield from comparer(ctx, old, new)
