"""When two snapshots hold the same schema: the one definition of what is *not* schema in a snapshot.

Two introspections of the same schema differ in when and where they were taken (``taken_at``, the database
name, the server, the connecting user), in the planner's row estimates and in column positions (a column
dropped and added back). :func:`comparable` clears those, so plain dataclass equality answers "same schema?".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from dbguard_pipeline.model.schema import Snapshot, Table


def comparable_table(table: Table, *, positions: bool = False) -> Table:
    """``table`` without its row estimate (and, unless ``positions``, without column positions)."""
    if positions:
        return dataclasses.replace(table, row_estimate=0)
    return dataclasses.replace(
        table, row_estimate=0, columns=tuple(dataclasses.replace(c, position=0) for c in table.columns)
    )


def comparable(snapshot: Snapshot, exclude_schemas: Iterable[str] = (), *, positions: bool = False) -> Snapshot:
    """The snapshot without its volatile fields (and without the objects of ``exclude_schemas``). ``positions``
    keeps column positions: an exact restore (a migration and its rollback) must give them back too, while two
    databases with the same schema may differ in them."""
    skip = set(exclude_schemas)
    return dataclasses.replace(
        snapshot,
        database="",
        server_version="",
        server_version_num=0,
        current_user="",
        taken_at="",
        schemas=tuple(s for s in snapshot.schemas if s not in skip),
        tables=tuple(comparable_table(t, positions=positions) for t in snapshot.tables if t.schema not in skip),
        views=tuple(v for v in snapshot.views if v.schema not in skip),
        functions=tuple(f for f in snapshot.functions if f.schema not in skip),
    )


def same_schema(a: Snapshot, b: Snapshot, exclude_schemas: Iterable[str] = ()) -> bool:
    """True when ``a`` and ``b`` hold the same schemas, tables, views, functions and roles (in the same order:
    introspection sorts them)."""
    skip = tuple(exclude_schemas)
    return comparable(a, skip) == comparable(b, skip)
