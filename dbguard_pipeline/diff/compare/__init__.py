"""The comparers, one per kind of object (as alembic's ``autogenerate/compare``): each walks the two
snapshots with :func:`_walk.pairs` and yields :class:`~dbguard_pipeline.diff.result.Change` objects, marked
weaker by :mod:`dbguard_pipeline.semantics.weakening`. Tables hand what they hold to their own comparers
(``tables.TABLE_COMPARERS``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from dbguard_pipeline.diff.compare._walk import Context
from dbguard_pipeline.diff.compare.functions import compare_functions
from dbguard_pipeline.diff.compare.policies import policy_facts, table_facts
from dbguard_pipeline.diff.compare.roles import compare_roles
from dbguard_pipeline.diff.compare.schemas import compare_schemas
from dbguard_pipeline.diff.compare.tables import compare_tables
from dbguard_pipeline.diff.compare.views import compare_views
from dbguard_pipeline.diff.result import Change

COMPARERS: tuple[Callable[[Context], Iterable[Change]], ...] = (
    compare_schemas,
    compare_tables,
    compare_views,
    compare_functions,
    compare_roles,
)


def compare(ctx: Context) -> list[Change]:
    """Every change between ``ctx.a`` and ``ctx.b``, in the comparers' order (not yet sorted)."""
    return [c for comparer in COMPARERS for c in comparer(ctx)]


__all__ = ["COMPARERS", "Context", "compare", "policy_facts", "table_facts"]
