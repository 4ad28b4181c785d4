"""Indexes of a table."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, pairs, table_item
from dbguard_pipeline.diff.result import ADDED, CHANGED, REMOVED, Change
from dbguard_pipeline.model.schema import Table


def compare_indexes(ctx: Context, ta: Table, tb: Table) -> Iterator[Change]:
    for name, old, new in pairs(ta.indexes, tb.indexes, lambda i: i.name):
        if old is None:
            yield table_item(tb, ADDED, "index", name, after=new)
        elif new is None:
            yield table_item(tb, REMOVED, "index", name, before=old)
        else:
            changed = attrs(old, new, ("definition", "valid"))
            if changed:
                yield table_item(tb, CHANGED, "index", name, attributes=changed)
