"""A table's row level security flags (enabled, forced)."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, table_item
from dbguard_pipeline.diff.result import CHANGED, Change
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.semantics.weakening import rls_weakening


def compare_rls(ctx: Context, ta: Table, tb: Table) -> Iterator[Change]:
    changed = attrs(ta, tb, ("rls_enabled", "rls_forced"))
    if changed:
        yield table_item(tb, CHANGED, "rls", attributes=changed).weaken(
            *rls_weakening(ta.rls_enabled, ta.rls_forced, tb.rls_enabled, tb.rls_forced)
        )
