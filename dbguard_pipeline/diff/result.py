"""What ``dbguard diff`` found: plain data (changes, the two sides, new and resolved findings). Its text and
JSON forms are :mod:`dbguard_pipeline.diff.render`'s."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from dbguard_pipeline.model.findings import Finding, Severity

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
# object types in output order
OBJECT_TYPES = ("schema", "table", "view", "function", "role")
# items of a table in output order
_ITEM_ORDER = {
    t: i
    for i, t in enumerate(
        ("schema", "table", "view", "function", "role", "rls", "column", "constraint", "index", "policy", "grant")
    )
}
_FAILING = (Severity.CRITICAL, Severity.WARNING)


@dataclass(frozen=True)
class AttributeChange:
    attribute: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One difference. ``object_type``/``schema``/``name``/``arguments`` name the object it belongs to (the
    table, view, function, role or schema); ``item_type``/``item`` name what changed inside it (a column, a
    policy, ...), or repeat the object type with ``item=None`` when the object itself was added, removed or
    had an attribute changed."""

    object_type: str  # schema | table | view | function | role
    schema: Optional[str]
    name: str
    change: str  # added | removed | changed
    item_type: str  # the object type itself, or rls | column | constraint | index | policy | grant
    item: Optional[str] = None
    attributes: tuple[AttributeChange, ...] = ()  # for "changed"
    before: Any = None  # the whole item for "removed"; for grants the privileges
    after: Any = None  # the whole item for "added"
    arguments: Optional[str] = None  # functions: identity arguments
    weaker: bool = False
    reasons: tuple[str, ...] = ()
    note: Optional[str] = None  # a remark that is not a weakening (e.g. "access narrows")

    @property
    def qualified(self) -> str:
        base = f"{self.schema}.{self.name}" if self.schema is not None else self.name
        return f"{base}({self.arguments})" if self.arguments is not None else base

    @property
    def own(self) -> bool:
        """The change is to the object itself (added, removed, an attribute), not to an item inside it."""
        return self.item_type == self.object_type

    @property
    def object_key(self) -> tuple[int, str, str, str]:
        return (OBJECT_TYPES.index(self.object_type), self.schema or "", self.name, self.arguments or "")

    def sort_key(self) -> tuple[Any, ...]:
        return (
            *self.object_key,
            0 if self.own else 1,
            _ITEM_ORDER.get(self.item_type, 99),
            self.item or "",
            {REMOVED: 0, CHANGED: 1, ADDED: 2}[self.change],
        )

    def weaken(self, *reasons: str) -> Change:
        new = tuple(r for r in reasons if r and r not in self.reasons)
        return replace(self, weaker=True, reasons=self.reasons + new) if new else self


@dataclass(frozen=True)
class Side:
    """What was compared on one side (a label for people: a file path or user@host:port/db, never a DSN)."""

    label: str
    kind: str  # snapshot | database
    database: str
    server_version: str
    taken_at: str

    def to_dict(self) -> dict[str, str]:
        return {
            "label": self.label,
            "kind": self.kind,
            "database": self.database,
            "server_version": self.server_version,
            "taken_at": self.taken_at,
        }


@dataclass(frozen=True)
class SnapshotDiff:
    source: Side
    target: Side
    changes: tuple[Change, ...]
    new_findings: tuple[Finding, ...] = ()
    resolved_findings: tuple[Finding, ...] = ()

    @property
    def identical(self) -> bool:
        return not self.changes and not self.new_findings and not self.resolved_findings

    @property
    def weaker_changes(self) -> list[Change]:
        return [c for c in self.changes if c.weaker]

    @property
    def failing_new_findings(self) -> list[Finding]:
        return [f for f in self.new_findings if f.severity in _FAILING]

    @property
    def weakens_isolation(self) -> bool:
        """What ``--fail-on-weaker`` fails on: a weakening change or a new critical or warning finding."""
        return bool(self.weaker_changes or self.failing_new_findings)

    def objects_changed(self) -> dict[str, int]:
        seen: dict[str, set[tuple[int, str, str, str]]] = {t: set() for t in OBJECT_TYPES}
        for c in self.changes:
            seen[c.object_type].add(c.object_key)
        return {t: len(v) for t, v in seen.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "objects_changed": self.objects_changed(),
            "additions": sum(1 for c in self.changes if c.change == ADDED),
            "removals": sum(1 for c in self.changes if c.change == REMOVED),
            "changes": sum(1 for c in self.changes if c.change == CHANGED),
            "weaker": len(self.weaker_changes),
            "new_findings": len(self.new_findings),
            "new_failing_findings": len(self.failing_new_findings),
            "resolved_findings": len(self.resolved_findings),
        }
