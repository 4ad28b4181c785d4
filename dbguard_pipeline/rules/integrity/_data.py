"""What the data rules share: the per-table metrics and how their counts read in a message."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dbguard_pipeline.rules.context import RuleContext


def table_metrics(ctx: RuleContext) -> list[Any]:
    """The measured tables (``pg.metrics.TableMetrics``), none when no metrics were taken."""
    return [] if not ctx.metrics else [m for m in ctx.metrics.values() if hasattr(m, "orphans")]


def about(m: Any, n: int) -> str:
    return f"about {n:,}" if m.estimated else f"{n:,}"


def sampled(m: Any) -> str:
    return f" (estimated from a {m.sample_percent:g}% sample)" if m.estimated else ""


def table_arg(m: Any) -> str:
    return str(m.table) if m.schema == "public" else f"{m.schema}.{m.table}"


def counted_references(m: Any, counts: Mapping[str, int]) -> Iterator[tuple[str, int, Any, str, str]]:
    """(name, count, the reference or None, its columns and its target as text) for each non-zero count of a
    table's references (``m.orphans``, ``m.cross_tenant``), by name."""
    for name, count in sorted(counts.items()):
        if count:
            ref = m.reference(name)
            yield (name, count, ref, ", ".join(ref.columns) if ref else name,
                   ref.target if ref else "its parent")
