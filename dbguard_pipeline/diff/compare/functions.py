"""Functions, by schema, name and identity arguments."""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.diff.compare._walk import Context, attrs, whole
from dbguard_pipeline.diff.result import CHANGED, Change
from dbguard_pipeline.semantics.weakening import function_weakening

ATTRIBUTES = ("returns", "language", "security_definer", "volatility", "config", "owner", "body")


def compare_functions(ctx: Context) -> Iterator[Change]:
    key = lambda f: (f.schema, f.name, f.arguments)  # noqa: E731
    for (schema, name, arguments), old, new in ctx.scoped_pairs(ctx.a.functions, ctx.b.functions, key):
        if old is None or new is None:
            yield whole("function", schema, name, old, new, arguments=arguments)
            continue
        # who may execute it; a snapshot file written before dbguard read it has none (unknown): not compared
        names = ATTRIBUTES + (("executors",) if old.executors and new.executors else ())
        changed = attrs(old, new, names)
        if changed:
            yield Change("function", schema, name, CHANGED, "function", arguments=arguments, attributes=changed).weaken(
                *function_weakening(old, new)
            )
