"""Views (and materialized views) and their grants."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, whole
from dbguard_pipeline.diff.compare.grants import compare_grants
from dbguard_pipeline.diff.result import CHANGED, Change
from dbguard_pipeline.semantics.weakening import view_weakening

ATTRIBUTES = ("materialized", "security_invoker", "security_barrier", "owner", "definition")


def compare_views(ctx: Context) -> Iterator[Change]:
    for (schema, name), old, new in ctx.scoped_pairs(ctx.a.views, ctx.b.views, lambda v: (v.schema, v.name)):
        if old is None or new is None:
            yield whole("view", schema, name, old, new)
        else:
            changed = attrs(old, new, ATTRIBUTES)
            if changed:
                yield Change("view", schema, name, CHANGED, "view", attributes=changed).weaken(
                    *view_weakening(old, new)
                )
            yield from compare_grants("view", schema, name, old.grants, new.grants)
