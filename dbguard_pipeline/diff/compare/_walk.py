"""What every comparer shares: the two snapshots and the config, the walk over two collections by key, and
the attributes that differ."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, TypeVar

from dbguard_pipeline.config import Config
from dbguard_pipeline.diff.result import ADDED, REMOVED, AttributeChange, Change
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.policy import Analyzer

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class InSchema(Protocol):
    @property
    def schema(self) -> str: ...


S = TypeVar("S", bound=InSchema)


@dataclass(frozen=True)
class Context:
    a: Snapshot  # before
    b: Snapshot  # after
    config: Config
    # (schema, table, policy) -> the isolation rules whose finding on that policy is new in b
    flagged_policies: Mapping[tuple[str, str, str], tuple[str, ...]] = field(default_factory=dict)
    # the policy analyzer of each side, built on first use and held for the whole diff
    _analyzers: dict[int, Analyzer] = field(default_factory=dict, compare=False, repr=False)

    def analyzer(self, snapshot: Snapshot) -> Analyzer:
        an = self._analyzers.get(id(snapshot))
        if an is None:
            an = self._analyzers[id(snapshot)] = Analyzer(snapshot, self.config)
        return an

    def in_scope(self, schema: str) -> bool:
        """The schemas the audit looks at: ``schemas`` when the config names them, else all but the excluded."""
        cfg = self.config
        return schema in cfg.schemas if cfg.schemas else schema not in cfg.exclude_schemas

    def scoped_pairs(
        self, a: Iterable[S], b: Iterable[S], key: Callable[[S], K]
    ) -> Iterator[tuple[K, Optional[S], Optional[S]]]:
        """:func:`pairs` of the objects in the schemas the audit looks at."""
        return pairs((x for x in a if self.in_scope(x.schema)), (x for x in b if self.in_scope(x.schema)), key)


def pairs(a: Iterable[T], b: Iterable[T], key: Callable[[T], K]) -> Iterator[tuple[K, Optional[T], Optional[T]]]:
    """(key, object in a or None, object in b or None) for every key on either side, in key order."""
    da: dict[Any, T] = {}
    db: dict[Any, T] = {}
    for side, items in ((da, a), (db, b)):
        for it in items:
            side.setdefault(key(it), it)
    for k in sorted(set(da) | set(db)):
        yield k, da.get(k), db.get(k)


def whole(object_type: str, schema: str, name: str, old: Any, new: Any, **kw: Any) -> Change:
    """An object added (``old`` None) or removed (``new`` None) as a whole."""
    if old is None:
        return Change(object_type, schema, name, ADDED, object_type, after=new, **kw)
    return Change(object_type, schema, name, REMOVED, object_type, before=old, **kw)


def attrs(a: Any, b: Any, names: Iterable[str]) -> tuple[AttributeChange, ...]:
    """The attributes among ``names`` whose values differ, in the order named."""
    return tuple(AttributeChange(n, getattr(a, n), getattr(b, n)) for n in names if getattr(a, n) != getattr(b, n))


def table_item(table: Table, change: str, item_type: str, item: Optional[str] = None, **kw: Any) -> Change:
    """A change to something inside ``table`` (a column, a policy, ...)."""
    return Change("table", table.schema, table.name, change, item_type, item, **kw)
