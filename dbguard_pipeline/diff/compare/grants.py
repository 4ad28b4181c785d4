"""Privileges granted on a table or view, per grantee."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dbguard_pipeline.diff.compare._walk import Context
from dbguard_pipeline.diff.result import ADDED, REMOVED, Change
from dbguard_pipeline.model.schema import Grant, Table
from dbguard_pipeline.semantics.weakening import grant_weakening


def _by_grantee(grants: Iterable[Grant]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for g in grants:
        out.setdefault(g.grantee, set()).add(g.privilege)
    return out


def compare_grants(
    object_type: str, schema: str, name: str, a: Iterable[Grant], b: Iterable[Grant]
) -> Iterator[Change]:
    ga, gb = _by_grantee(a), _by_grantee(b)
    for grantee in sorted(set(ga) | set(gb)):
        before, after = ga.get(grantee, set()), gb.get(grantee, set())
        removed, added = sorted(before - after), sorted(after - before)
        if removed:
            yield Change(object_type, schema, name, REMOVED, "grant", grantee, before=tuple(removed))
        if added:
            yield Change(object_type, schema, name, ADDED, "grant", grantee, after=tuple(added)).weaken(
                *grant_weakening(grantee, added)
            )


def compare_table_grants(ctx: Context, ta: Table, tb: Table) -> Iterator[Change]:
    return compare_grants("table", tb.schema, tb.name, ta.grants, tb.grants)
