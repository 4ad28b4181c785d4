"""What an index covers: an index serves equality look-ups on a set of columns when those columns, in any
order, are its leading keys, it is valid, and it is not partial."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

from dbguard_pipeline.model.schema import Index, Table


def usable(index: Index) -> bool:
    return index.valid and not index.predicate


def leads_with(index: Index, columns: Iterable[str]) -> bool:
    """The index's leading keys are exactly ``columns`` (in any order; expression keys never match)."""
    cols = tuple(columns)
    lead = index.columns[: len(cols)]
    return len(index.columns) >= len(cols) and None not in lead and set(lead) == set(cols)


def covering_index(table: Table, columns: Iterable[str]) -> Optional[Index]:
    """A valid, non-partial index of ``table`` leading with ``columns``, or None."""
    cols = tuple(columns)
    for idx in table.indexes:
        if usable(idx) and leads_with(idx, cols):
            return idx
    return None
