"""Foreign-key inference: which table a ``<name>_id`` column without a foreign key points at.

One answer for the data checks (``pg/metrics.py``: orphans and cross-tenant rows along an inferred reference)
and for the fix generator (``add-foreign-key TABLE`` without REFTABLE). No I/O.
"""

from __future__ import annotations

from typing import Optional

from dbguard_pipeline.model.schema import Snapshot, Table

_INT_TYPES = frozenset({"smallint", "integer", "bigint"})


def compatible_types(a: Optional[str], b: Optional[str]) -> bool:
    """Can a column of type ``a`` hold values of a key of type ``b`` (same type, or two integer types)?"""
    if a is None or b is None:
        return False
    return a == b or (a in _INT_TYPES and b in _INT_TYPES)


def column_type(table: Optional[Table], column: str) -> Optional[str]:
    if table is None:
        return None
    col = table.column(column)
    return col.type if col else None


def referenced_key(table: Table) -> Optional[str]:
    """The column a single-column reference to ``table`` targets: its single-column primary key, else its
    first single-column unique key; None when it has neither."""
    pk = table.primary_key
    if pk is not None and len(pk.columns) == 1:
        return pk.columns[0]
    for c in table.constraints:
        if c.kind == "unique" and len(c.columns) == 1:
            return c.columns[0]
    return None


def parent_names(stem: str) -> tuple[str, ...]:
    """Table names a ``<stem>_id`` column may point at, most likely first: ``<stem>s``, ``<stem>es``,
    ``<ste>ies`` (for a stem ending in y), ``<stem>``."""
    names = [stem + "s", stem + "es"]
    if stem.endswith("y"):
        names.append(stem[:-1] + "ies")
    names.append(stem)
    return tuple(names)


class TableNames:
    """The tables of a snapshot by name, and by schema and every name suffix that follows an underscore
    (``vehicle_images`` is found under ``images``): built once, so that inferring the references of a
    thousand tables costs look-ups, not a scan of the catalog per column."""

    def __init__(self, snapshot: Snapshot):
        self.by_name: dict[str, list[Table]] = {}
        self.by_suffix: dict[tuple[str, str], list[Table]] = {}
        for t in snapshot.tables:
            self.by_name.setdefault(t.name, []).append(t)
            for i, ch in enumerate(t.name):
                if ch == "_" and i + 1 < len(t.name):
                    self.by_suffix.setdefault((t.schema, t.name[i + 1 :]), []).append(t)


def _target(table: Table, column_type_: Optional[str], parent: Optional[Table]) -> Optional[tuple[Table, str]]:
    if parent is None or parent.qualified == table.qualified or parent.kind == "partition":
        return None
    key = referenced_key(parent)
    if key is None or not compatible_types(column_type_, column_type(parent, key)):
        return None
    return parent, key


def infer_parent(
    snapshot: Snapshot, table: Table, column: str, names: Optional[TableNames] = None
) -> Optional[tuple[Table, str]]:
    """The table (and its key column) the ``<name>_id`` column of ``table`` points at by naming convention,
    or None.

    1. A table called ``<name>s``, ``<name>es``, ``<nam>ies`` or ``<name>`` (in that order): the one in the
       same schema, else the only table of that name in the snapshot.
    2. Otherwise, the only table of the same schema whose name ends with ``_`` and one of those names
       (``image_id`` -> ``vehicle_images``).

    A parent is never the table itself nor a partition (references go to the partitioned table); it needs a
    single-column primary key (else a single-column unique key) whose type the column can hold (the same
    type, or two integer types). Ambiguity means no inference.

    This merges what the data checks and the fix generator did separately: the checks gained the suffix
    match and the unique-key fallback of the generator; the generator gained the type check, the partition
    exclusion and the checks' order (``<name>es`` before ``<name>``, so ``box_id`` means ``boxes`` even when
    a table ``box`` exists).
    """
    if not column.endswith("_id") or len(column) <= 3:
        return None
    names = names or TableNames(snapshot)
    stem = column[:-3]
    col_type = column_type(table, column)
    candidates = parent_names(stem)
    for name in candidates:
        tables = names.by_name.get(name, [])
        same = [t for t in tables if t.schema == table.schema]
        found = _target(table, col_type, same[0] if same else (tables[0] if len(tables) == 1 else None))
        if found is not None:
            return found
    near: dict[str, tuple[Table, str]] = {}
    for name in candidates:
        for t in names.by_suffix.get((table.schema, name), []):
            found = _target(table, col_type, t)
            if found is not None:
                near[t.qualified] = found
    return next(iter(near.values())) if len(near) == 1 else None
