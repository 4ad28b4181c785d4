"""Why row level security is slow on a table, read from the plans of the app role's statements (and the schema).

Each detector needs evidence in a plan that ran, never the schema alone:

- per_row_call: a context call (auth.jwt(), auth.uid(), current_setting(), a helper) in the Filter of a node
  that read many rows, so it ran once per row (a SubPlan, not an InitPlan);
- volatile_function: the same for a VOLATILE helper (evaluated per row, and no index can use it);
- missing_tenant_index: a Seq Scan of the table keeping a small share of what it reads, no index leading with
  the tenant column;
- membership_without_index / unindexed_policy_column: a Seq Scan (in a sub-plan: the membership look-up, or of
  the table itself) filtering a column on the caller's identity, no index leading with that column;
- subquery_per_row: ``col IN (SELECT ...)`` tested per row as a (hashed) SubPlan instead of an InitPlan an
  index could serve;
- permissive_or: several permissive policies OR-ed in a filter no single index serves;
- unexplained: the table is slow and none of the above shows.

Pure: no database here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from dbguard_pipeline.analyze.plans import Node, context_columns
from dbguard_pipeline.analyze.report import Cause, Fix, StatementResult
from dbguard_pipeline.config import Config
from dbguard_pipeline.fixes.rewrite import called_functions, rewrite
from dbguard_pipeline.model.schema import Function, Snapshot, Table
from dbguard_pipeline.policy import per_row_calls
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.semantics.indexes import covering_index
from dbguard_pipeline.text import ident, qname

PER_ROW_MIN = 100  # a per-row evaluation on a slow table shows from this many rows on
SCAN_MIN = 1_000  # a sequential scan in a sub-plan matters from this many rows on
SHARE_MAX = 0.2  # an index serves a scan that keeps at most this share of the rows it reads


@dataclass(frozen=True)
class Thresholds:
    slow_overhead: float = 2.0  # a table is slow from this overhead on ...
    min_ms: float = 0.5  # ... when its statements take at least this long as the app role
    tenant_index_min_rows: int = 10_000


def _applies_to_app(policy_roles: Sequence[str], role: str) -> bool:
    return not policy_roles or "public" in policy_roles or role in policy_roles


def _bare(label: str) -> str:
    return label.rstrip("()").rsplit(".", 1)[-1]


def _where(node: Node, statement: str) -> str:
    if node.estimated:
        return f"Filter of {node.label()}, ~{node.kept:,.0f} rows estimated ({statement}, generic plan)"
    return f"Filter of {node.label()}, {node.examined:,.0f} rows read, {node.kept:,.0f} kept ({statement})"


def _rows(node: Node) -> str:
    return f"{'~' if node.estimated else ''}{node.examined:,.0f}"


def _share(node: Node) -> float:
    return node.kept / node.examined if node.examined else 1.0


def _subplan_loops(nodes: Sequence[Node], node: Node) -> Optional[float]:
    """Loops of the innermost SubPlan above ``node`` when it is not hashed (evaluated per row of its parent)."""
    idx = nodes.index(node)
    for up in reversed(nodes[:idx]):
        if up.depth < node.depth and up.parent == "SubPlan":
            return up.loops if up.loops > 1 else None
    return None


class _Detector:
    def __init__(
        self,
        table: Table,
        path: Sequence[tenancy.FkStep],
        snapshot: Snapshot,
        config: Config,
        statements: Sequence[StatementResult],
        th: Thresholds,
    ):
        self.table, self.path, self.snapshot, self.config, self.th = table, path, snapshot, config, th
        self.statements = [s for s in statements if s.app.plan is not None]
        role = config.tenant.app_role
        self.policies = [p for p in table.policies if _applies_to_app(p.roles, role)]
        self.causes: list[Cause] = []
        self.keys: set[tuple[str, Optional[str], object]] = set()

    @cached_property
    def _policy_calls(self) -> tuple[dict[str, str], dict[str, Function]]:
        """The per-row context calls (bare name -> label) and the schema's helpers the policies call."""
        calls: dict[str, str] = {}
        helpers: dict[str, Function] = {}
        for p in self.policies:
            for expr in (p.using, p.with_check):
                for label in per_row_calls(expr) if expr else ():
                    calls.setdefault(_bare(label), label)
                for fn in called_functions(expr, self.snapshot):
                    helpers.setdefault(fn.name, fn)
        return calls, helpers

    @property
    def calls(self) -> dict[str, str]:
        return self._policy_calls[0]

    @property
    def helpers(self) -> dict[str, Function]:
        return self._policy_calls[1]

    @cached_property
    def _rewrites(self) -> tuple[set[str], set[str]]:
        """What the optimize-policy rewrite would change: the calls it wraps, the columns it turns into arrays."""
        stable = [f.qualified for f in self.helpers.values()]
        wrapped: set[str] = set()
        arrays: set[str] = set()
        for p in self.table.policies:
            for expr in (p.using, p.with_check):
                rw = rewrite(expr, self.table, self.snapshot, self.config, stabilized=stable)
                if rw is not None:
                    wrapped.update(_bare(c) for c in rw.wrapped)
                    arrays.update(rw.arrays)
        return wrapped, arrays

    @property
    def wrapped(self) -> set[str]:
        return self._rewrites[0]

    @property
    def arrays(self) -> set[str]:
        return self._rewrites[1]

    def add(self, cause: Cause, key: Optional[str] = None) -> None:
        """Keep one cause per kind and fix (per call for per-row calls): the first found, from the count."""
        k = (cause.kind, key, cause.fix if cause.fix else cause.message)
        if k not in self.keys:
            self.keys.add(k)
            self.causes.append(cause)

    def _best(
        self, found: dict[str, tuple[Node, str, list[Node]]], key: str, node: Node, statement: str, nodes: list[Node]
    ) -> None:
        if key not in found or node.examined > found[key][0].examined:
            found[key] = (node, statement, nodes)

    # ------------------------------------------------------------------ detectors
    def per_row_calls(self) -> None:
        found: dict[str, tuple[Node, str, list[Node]]] = {}
        for s in self.statements:
            nodes = list(s.app.plan.nodes)  # type: ignore[union-attr]
            for n in nodes:
                if not n.filter or n.examined < PER_ROW_MIN:
                    continue
                for call in n.calls():
                    name = _bare(call)
                    if name in self.calls or name in self.helpers:
                        self._best(found, name, n, s.name, nodes)
        for name, (n, stmt, nodes) in found.items():
            helper = self.helpers.get(name)
            label = f"{qname(helper.schema, helper.name)}()" if helper else self.calls.get(name, f"{name}()")
            fix = Fix("policy", self.table.qualified) if name in self.wrapped else None
            loops = _subplan_loops(nodes, n)
            if helper is not None and helper.volatility == "volatile":
                self.add(
                    Cause(
                        "volatile_function",
                        f"{label} is VOLATILE: evaluated for each of {_rows(n)} rows, and no index can "
                        f"use it" + ("" if fix else " (its body may write: no automatic fix)"),
                        _where(n, stmt),
                        stmt,
                        fix,
                    ),
                    key=name,
                )
                continue
            how = (
                f"SubPlan evaluated per row ({loops:,.0f} times): {label}"
                if loops
                else f"{label} evaluated per row ({_rows(n)} rows)"
            )
            tail = ": not wrapped in (select ...)" if fix else ": it reads a column, so it cannot be wrapped"
            self.add(Cause("per_row_call", how + tail, _where(n, stmt), stmt, fix), key=name)

    def seq_scans(self) -> None:
        tcol = tenancy.tenant_column(self.table, self.config) if not self.path else None
        for s in self.statements:
            for n in s.app.plan.nodes:  # type: ignore[union-attr]
                if not n.seq_scan or _share(n) > SHARE_MAX or n.relation is None:
                    continue
                rel = self.snapshot.table(n.relation)
                if rel is None:
                    continue
                own = rel.qualified == self.table.qualified and not (n.in_subplan or n.in_initplan)
                if (
                    own
                    and tcol
                    and n.examined >= self.th.tenant_index_min_rows
                    and covering_index(self.table, (tcol,)) is None
                ):
                    self.add(
                        Cause(
                            "missing_tenant_index",
                            f"Seq Scan reads {n.examined:,.0f} rows to keep the tenant's {n.kept:,.0f} "
                            f"({_share(n):.1%}): no index leads with {ident(tcol)}",
                            _where(n, s.name),
                            s.name,
                            Fix("index", self.table.qualified, (tcol,)),
                        )
                    )
                if n.examined < SCAN_MIN:
                    continue
                rel_tcol = self.config.tenant.column if tenancy.has_tenant_column(rel, self.config) else None
                for col in context_columns(n.filter):
                    if (
                        rel.column(col) is None
                        or (own and col == tcol)
                        or covering_index(rel, (col,))
                        or any(ix.valid and ix.columns[:1] == (col,) for ix in rel.indexes)
                    ):
                        continue
                    cols = (col, rel_tcol) if rel_tcol and rel_tcol != col else (col,)
                    fix = Fix("index", rel.qualified, cols)
                    if own:
                        self.add(
                            Cause(
                                "unindexed_policy_column",
                                f"the policy filters {qname(rel.schema, rel.name)} on {ident(col)} and no index "
                                "leads with it: "
                                f"Seq Scan reads {n.examined:,.0f} rows to keep {n.kept:,.0f}",
                                _where(n, s.name),
                                s.name,
                                fix,
                            )
                        )
                    else:
                        self.add(
                            Cause(
                                "membership_without_index",
                                f"membership sub-query scans {qname(rel.schema, rel.name)} ({n.examined:,.0f} rows "
                                f"per query) for the caller's rows: no index on ({', '.join(map(ident, cols))})",
                                _where(n, s.name),
                                s.name,
                                fix,
                            )
                        )

    def subqueries(self) -> None:
        for s in self.statements:
            nodes = list(s.app.plan.nodes)  # type: ignore[union-attr]
            for n in nodes:
                scanned = self.snapshot.table(n.relation) if n.relation is not None else None
                if scanned is None or scanned.qualified != self.table.qualified:
                    continue
                if (
                    n.in_subplan
                    or n.in_initplan
                    or "SubPlan" not in n.filter
                    or n.examined < PER_ROW_MIN
                    or _share(n) > SHARE_MAX
                ):
                    continue
                kind = "hashed SubPlan" if "hashed SubPlan" in n.filter else "SubPlan"
                if self.arrays:
                    cols = ", ".join(ident(c) for c in sorted(self.arrays))
                    idx = all(covering_index(self.table, (c,)) for c in self.arrays)
                    self.add(
                        Cause(
                            "subquery_per_row",
                            f"{kind} tested for each of {n.examined:,.0f} rows: {cols} IN (SELECT ...) is not "
                            f"an InitPlan {'the index on ' + cols + ' could serve' if idx else 'an index could serve'}",
                            _where(n, s.name),
                            s.name,
                            Fix("policy", self.table.qualified),
                        )
                    )
                else:
                    self.add(
                        Cause(
                            "subquery_per_row",
                            f"{kind} evaluated for each of {n.examined:,.0f} rows (a correlated sub-query in "
                            f"the policy): no automatic fix",
                            _where(n, s.name),
                            s.name,
                        )
                    )

    def permissive_or(self) -> None:
        permissive = sorted(p.name for p in self.policies if p.permissive and p.command in ("all", "select"))
        if len(permissive) < 2:
            return
        for s in self.statements:
            for n in s.app.plan.nodes:  # type: ignore[union-attr]
                if (
                    n.relation
                    and n.scans
                    and " OR " in n.filter
                    and not (n.in_subplan or n.in_initplan)
                    and n.examined >= PER_ROW_MIN
                    and _share(n) <= SHARE_MAX
                ):
                    self.add(
                        Cause(
                            "permissive_or",
                            f"{len(permissive)} permissive policies ({', '.join(map(ident, permissive))}) are OR-ed: no "
                            f"single index serves the filter (merge them, or make the extra ones RESTRICTIVE)",
                            _where(n, s.name),
                            s.name,
                        )
                    )
                    return


def find_causes(
    table: Table,
    path: Sequence[tenancy.FkStep],
    snapshot: Snapshot,
    config: Config,
    statements: Sequence[StatementResult],
    overhead: Optional[float],
    app_ms: Optional[float],
    th: Thresholds = Thresholds(),
) -> list[Cause]:
    """The causes the plans show. The index detectors always look (a large scan costs whatever RLS adds); the
    others only on a slow table (overhead and time above the thresholds)."""
    d = _Detector(table, path, snapshot, config, statements, th)
    slow = overhead is not None and overhead >= th.slow_overhead and (app_ms or 0.0) >= th.min_ms
    if slow:
        d.per_row_calls()
        d.subqueries()
    d.seq_scans()
    if slow:
        d.permissive_or()
        if not d.causes:
            worst = max(d.statements, key=lambda s: s.overhead or 0.0, default=None)
            if worst is not None:
                d.add(
                    Cause(
                        "unexplained",
                        f"RLS costs {overhead:.1f}x and the plan shows no known pattern: read the "
                        f"plan of the {worst.name} statement",
                        f"{worst.title}",
                        worst.name,
                    )
                )
    return d.causes
