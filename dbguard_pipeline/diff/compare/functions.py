"""Functions, by schema, name and identity arguments."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, pairs
from dbguard_pipeline.diff.result import ADDED, CHANGED, REMOVED, Change
from dbguard_pipeline.semantics.weakening import function_weakening

ATTRIBUTES = ("returns", "language", "security_definer", "volatility", "config", "owner", "body")


def compare_functions(ctx: Context) -> Iterator[Change]:
    for (schema, name, arguments), old, new in pairs(
        (f for f in ctx.a.functions if ctx.in_scope(f.schema)),
        (f for f in ctx.b.functions if ctx.in_scope(f.schema)),
        lambda f: (f.schema, f.name, f.arguments),
    ):
        if old is None:
            yield Change("function", schema, name, ADDED, "function", arguments=arguments, after=new)
        elif new is None:
            yield Change("function", schema, name, REMOVED, "function", arguments=arguments, before=old)
        else:
            changed = attrs(old, new, ATTRIBUTES)
            if changed:
                yield Change(
                    "function", schema, name, CHANGED, "function", arguments=arguments, attributes=changed
                ).weaken(*function_weakening(old, new))
