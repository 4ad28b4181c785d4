"""Reading ``EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON)`` output: the plan tree flattened into the facts the
cause detectors need (which relation a node scans, its filter, how many rows it examined and kept, whether it
runs inside a SubPlan or an InitPlan). Pure: no database here.

Row counts in PostgreSQL's JSON are per loop ("Actual Rows", "Rows Removed by Filter"); a node's totals are
those times "Actual Loops". Plans without ANALYZE (generic plans of pg_stat_statements entries) carry only the
planner's estimates ("Plan Rows"), which stand in for the actual numbers and are marked ``estimated``.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

SCAN_TYPES = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan", "Tid Range Scan")
_CALL = re.compile(r'(?:(?P<schema>"[^"]+"|[A-Za-z_][\w$]*)\.)?(?P<name>"[^"]+"|[A-Za-z_][\w$]*)\(')
_NOT_FUNCTIONS = frozenset({"ANY", "ALL", "ARRAY", "ROW", "SubPlan", "InitPlan", "CASE", "NOT", "AND", "OR", "IN",
                            "EXISTS", "hashed", "VALUES"})


@dataclass(frozen=True)
class Node:
    """One plan node with the numbers that matter here."""

    node_type: str
    relation: Optional[str]  # "schema.name" (VERBOSE), or the bare name when the schema is not shown
    alias: Optional[str]
    index: Optional[str]
    filter: str  # Filter and Join Filter, the expressions evaluated for every row the node reads
    index_cond: str  # Index Cond and Recheck Cond: evaluated once per scan (runtime keys)
    rows: float  # per loop
    removed: float  # per loop, by Filter and Join Filter
    loops: float
    parent: Optional[str]  # "Parent Relationship": Outer, Inner, SubPlan, InitPlan, Member, ...
    subplan: Optional[str]  # "Subplan Name", e.g. "SubPlan 2", "InitPlan 1 (returns $0)"
    in_subplan: bool  # under a SubPlan (evaluated per row of its parent, or hashed)
    in_initplan: bool  # under an InitPlan (evaluated once per query)
    depth: int
    estimated: bool = False

    @property
    def kept(self) -> float:
        return self.rows * self.loops

    @property
    def examined(self) -> float:
        return (self.rows + self.removed) * self.loops

    @property
    def scans(self) -> bool:
        return self.relation is not None and any(self.node_type.endswith(t) for t in SCAN_TYPES)

    @property
    def seq_scan(self) -> bool:
        return self.node_type in ("Seq Scan", "Parallel Seq Scan")

    def label(self) -> str:
        on = f" on {self.relation}" if self.relation else ""
        using = f" using {self.index}" if self.index else ""
        return f"{self.node_type}{using}{on}"

    def calls(self) -> list[str]:
        """Functions called in the node's per-row expressions, as written there (``auth.jwt``, ``current_setting``)."""
        out: list[str] = []
        for m in _CALL.finditer(self.filter):
            name = m.group("name").strip('"')
            if name in _NOT_FUNCTIONS:
                continue
            schema = m.group("schema")
            label = f"{schema.strip(chr(34))}.{name}" if schema else name
            if label not in out:
                out.append(label)
        return out


@dataclass(frozen=True)
class Plan:
    nodes: tuple[Node, ...]
    execution_ms: Optional[float]
    planning_ms: Optional[float]
    analyzed: bool

    def top_rows(self) -> float:
        return self.nodes[0].kept if self.nodes else 0.0

    def _aggregated(self) -> Optional[Node]:
        main = [n for n in self.nodes if not (n.in_subplan or n.in_initplan)]
        aggs = [i for i, n in enumerate(main) if n.node_type == "Aggregate"]
        if not aggs:
            return None
        agg = main[aggs[-1]]
        for n in main[aggs[-1] + 1:]:
            if n.depth == agg.depth + 1 and n.parent in (None, "Outer"):
                return n
        return None

    def aggregated_rows(self) -> Optional[float]:
        """Rows fed into the innermost aggregate of the main plan: what ``SELECT count(*)`` counted (summed
        over parallel workers). None when the plan has no aggregate."""
        n = self._aggregated()
        return None if n is None else n.kept

    def aggregated_slack(self) -> float:
        """How far :meth:`aggregated_rows` may be off: PostgreSQL rounds the rows of each loop (parallel
        workers), so the total is exact only to within the number of loops."""
        n = self._aggregated()
        return 0.0 if n is None or n.loops <= 1 else n.loops


    def scans_of(self, relation: str) -> list[Node]:
        bare = relation.split(".", 1)[-1]
        return [n for n in self.nodes if n.scans and n.relation in (relation, bare)]

    def rows_read_from(self, relation: str) -> float:
        """Rows of ``relation`` that reached the rest of the plan outside sub-plans (what the query saw)."""
        return sum(n.kept for n in self.scans_of(relation) if not n.in_subplan and not n.in_initplan)

    def lines(self, limit: int = 12) -> list[str]:
        """A short, indented text rendering: node, relation, filter, rows (for reports)."""
        out = []
        for n in self.nodes[:limit]:
            what = n.subplan + ": " if n.subplan else ""
            est = "~" if n.estimated else ""
            rows = f"rows={est}{n.kept:,.0f}"
            if n.removed:
                rows += f" removed={est}{n.removed * n.loops:,.0f}"
            if n.loops > 1:
                rows += f" loops={n.loops:,.0f}"
            detail = f" [{_short(n.filter)}]" if n.filter else ""
            cond = f" (cond: {_short(n.index_cond)})" if n.index_cond and not n.filter else ""
            out.append(f"{'  ' * n.depth}{what}{n.label()} {rows}{detail}{cond}")
        if len(self.nodes) > limit:
            out.append(f"... {len(self.nodes) - limit} more nodes")
        return out


def _short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _relation(node: dict[str, Any]) -> Optional[str]:
    name = node.get("Relation Name")
    if not name:
        return None
    schema = node.get("Schema")
    return f"{schema}.{name}" if schema else str(name)


def _walk(node: dict[str, Any], depth: int, in_sub: bool, in_init: bool, analyzed: bool) -> Iterator[Node]:
    parent = node.get("Parent Relationship")
    in_sub = in_sub or parent == "SubPlan"
    in_init = in_init or parent == "InitPlan"
    filters = [node[k] for k in ("Filter", "Join Filter") if node.get(k)]
    conds = [node[k] for k in ("Index Cond", "Recheck Cond", "One-Time Filter") if node.get(k)]
    if analyzed:
        rows = float(node.get("Actual Rows") or 0)
        loops = float(node.get("Actual Loops") or 0)
        removed = float(node.get("Rows Removed by Filter") or 0) + float(node.get("Rows Removed by Join Filter") or 0)
    else:
        rows, loops, removed = float(node.get("Plan Rows") or 0), 1.0, 0.0
    yield Node(node_type=str(node.get("Node Type", "?")), relation=_relation(node), alias=node.get("Alias"),
               index=node.get("Index Name"), filter=" AND ".join(filters), index_cond=" AND ".join(conds),
               rows=rows, removed=removed, loops=loops, parent=parent, subplan=node.get("Subplan Name"),
               in_subplan=in_sub, in_initplan=in_init, depth=depth, estimated=not analyzed)
    for child in node.get("Plans") or ():
        yield from _walk(child, depth + 1, in_sub, in_init, analyzed)


def parse_plan(document: Any) -> Plan:
    """A plan from EXPLAIN's JSON (the list PostgreSQL returns, or its first element)."""
    doc = document[0] if isinstance(document, list) else document
    root = doc["Plan"]
    analyzed = "Actual Loops" in root
    return Plan(nodes=tuple(_walk(root, 0, False, False, analyzed)), execution_ms=doc.get("Execution Time"),
                planning_ms=doc.get("Planning Time"), analyzed=analyzed)


_EQ_SIDE = r'(?:[A-Za-z_][\w$]*\.)?"?(?P<col>[A-Za-z_][\w$]*)"?'
_CONTEXT = r"(?P<ctx>\$\d+|\(InitPlan \d+\)\.col\d+|(?:[A-Za-z_][\w$]*\.)?[A-Za-z_][\w$]*\([^()]*\)(?:::[\w ]+)?)"
_COL_EQ_CONTEXT = re.compile(rf"\({_EQ_SIDE} = {_CONTEXT}\)")
_CONTEXT_EQ_COL = re.compile(rf"\({_CONTEXT} = {_EQ_SIDE}\)")


def context_columns(expression: str) -> list[str]:
    """Columns compared for equality with a per-query value in a plan expression: ``(user_id = $0)``,
    ``(m.user_id = auth.uid())``, ``((InitPlan 1).col1 = user_id)`` -> ``["user_id"]``."""
    out: list[str] = []
    for pattern in (_COL_EQ_CONTEXT, _CONTEXT_EQ_COL):
        for m in pattern.finditer(expression):
            col = m.group("col")
            if col not in out:
                out.append(col)
    return out


def same_rows(a: Optional[float], b: Optional[float], slack: float = 0.0) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= slack
