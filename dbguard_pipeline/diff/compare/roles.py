"""Roles (cluster-wide: not limited by the schema scope)."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, pairs
from dbguard_pipeline.diff.result import ADDED, CHANGED, REMOVED, Change
from dbguard_pipeline.semantics.weakening import role_weakening


def compare_roles(ctx: Context) -> Iterator[Change]:
    for name, old, new in pairs(ctx.a.roles, ctx.b.roles, lambda r: r.name):
        if new is None:
            yield Change("role", None, name, REMOVED, "role", before=old)
        elif old is None:
            yield Change("role", None, name, ADDED, "role", after=new).weaken(*role_weakening(None, new))
        else:
            changed = attrs(old, new, ("superuser", "bypassrls", "can_login"))
            if changed:
                yield Change("role", None, name, CHANGED, "role", attributes=changed).weaken(*role_weakening(old, new))
