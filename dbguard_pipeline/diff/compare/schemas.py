"""Schemas: added or removed (in the audit's scope)."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context
from dbguard_pipeline.diff.result import ADDED, REMOVED, Change


def compare_schemas(ctx: Context) -> Iterator[Change]:
    sa = {s for s in ctx.a.schemas if ctx.in_scope(s)}
    sb = {s for s in ctx.b.schemas if ctx.in_scope(s)}
    for s in sorted(sa - sb):
        yield Change("schema", None, s, REMOVED, "schema")
    for s in sorted(sb - sa):
        yield Change("schema", None, s, ADDED, "schema")
