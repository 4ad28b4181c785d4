"""Tables: added, removed, or their own attributes changed; then each kind of item inside a table has its
comparer (row level security, columns, constraints, indexes, policies, grants)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, table_item, whole
from dbguard_pipeline.diff.compare.columns import compare_columns
from dbguard_pipeline.diff.compare.constraints import compare_constraints
from dbguard_pipeline.diff.compare.grants import compare_table_grants
from dbguard_pipeline.diff.compare.indexes import compare_indexes
from dbguard_pipeline.diff.compare.policies import compare_policies
from dbguard_pipeline.diff.compare.rls import compare_rls
from dbguard_pipeline.diff.result import CHANGED, Change
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
    for (schema, name), old, new in ctx.scoped_pairs(ctx.a.tables, ctx.b.tables, lambda t: (t.schema, t.name)):
        if old is None or new is None:
            yield whole("table", schema, name, old, new)
        else:
            for comparer in TABLE_COMPARERS:
                yield from comparer(ctx, old, new)
