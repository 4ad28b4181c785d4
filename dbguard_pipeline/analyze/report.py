"""What ``dbguard analyze`` found: per tenant table the statements measured (median milliseconds as the app role
and as the owner with the explicit predicate, and their ratio: the overhead), the causes read from the plans,
and the suggestions proven on a scratch copy. Data and its JSON form; text and markdown are in :mod:`.render`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from dbguard_pipeline.analyze.session import Timing
from dbguard_pipeline.fixes.plan import Migration

MIN_MS = 0.05  # no time counts as less than this in a ratio (ratios of microseconds are noise)
JSON_VERSION = 1


def ratio(app_ms: Optional[float], owner_ms: Optional[float]) -> Optional[float]:
    if app_ms is None or owner_ms is None:
        return None
    return round(max(app_ms, MIN_MS) / max(owner_ms, MIN_MS), 2)


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class Fix:
    """What a cause asks for: a policy rewrite of ``relation`` ("policy"), or an index on ``relation`` leading
    with ``columns`` ("index")."""

    kind: str
    relation: str
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cause:
    kind: str  # per_row_call | volatile_function | missing_tenant_index | membership_without_index |
    #            unindexed_policy_column | subquery_per_row | permissive_or | unexplained
    message: str  # one line: "auth.jwt() evaluated per row: not wrapped in (select ...)"
    evidence: str  # where the plan shows it: "Filter of Seq Scan on public.orders, 120,000 rows (count)"
    statement: str
    fix: Optional[Fix] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "evidence": self.evidence,
            "statement": self.statement,
            "fix": None
            if self.fix is None
            else {"kind": self.fix.kind, "relation": self.fix.relation, "columns": list(self.fix.columns)},
        }


@dataclass
class StatementResult:
    name: str
    title: str
    app_sql: str
    owner_sql: str
    app: Timing
    owner: Timing

    @property
    def overhead(self) -> Optional[float]:
        return ratio(self.app.ms, self.owner.ms) if self.app.ok or self.app.timed_out else None

    def to_dict(self) -> dict[str, Any]:
        def side(t: Timing) -> dict[str, Any]:
            return {
                "runs": [_ms(x) for x in t.runs],
                "timed_out": t.timed_out,
                "error": t.error,
                "rows": None if t.plan is None else t.plan.top_rows(),
            }

        return {
            "name": self.name,
            "title": self.title,
            "ms": {"app": _ms(self.app.ms), "owner": _ms(self.owner.ms)},
            "overhead": self.overhead,
            "sql": {"app": self.app_sql, "owner": self.owner_sql},
            "app": side(self.app),
            "owner": side(self.owner),
            "app_plan": self.app.plan.lines() if self.app.plan else [],
        }


@dataclass
class Suggestion:
    """A fix for one or more causes, as a migration with its exact rollback, and what it did on the copy."""

    action: str  # the generate-migration action it maps to: optimize-policy | add-composite-index
    relation: str  # the table the migration changes ("schema.table")
    columns: tuple[str, ...]  # add-composite-index: the index's columns
    title: str
    causes: list[str]  # kinds of the causes it answers
    tables: list[str]  # the measured tables it is meant to speed up
    migration: Migration
    status: str = "candidate"  # proposed (proven faster) | rejected (measured, not faster) | unproven
    reason: Optional[str] = None
    ms_before: Optional[float] = None  # the app role's total for the tables, on the copy
    ms_after: Optional[float] = None
    overhead_after: Optional[float] = None
    rows_unchanged: Optional[bool] = None  # the app role sees the same rows after the fix
    rollback_verified: Optional[bool] = None  # the rollback restored the schema exactly (snapshot compared)
    lint: Optional[list[str]] = None  # squawk/pglast violations ([] when clean)

    @property
    def speedup(self) -> Optional[float]:
        return ratio(self.ms_before, self.ms_after)

    @property
    def proposed(self) -> bool:
        return self.status == "proposed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "relation": self.relation,
            "columns": list(self.columns),
            "title": self.title,
            "causes": self.causes,
            "tables": self.tables,
            "status": self.status,
            "reason": self.reason,
            "ms": {"before": _ms(self.ms_before), "after": _ms(self.ms_after)},
            "speedup": self.speedup,
            "overhead_after": self.overhead_after,
            "rows_unchanged": self.rows_unchanged,
            "rollback_verified": self.rollback_verified,
            "lint": self.lint,
            "migration": {"forward": self.migration.render_forward(), "rollback": self.migration.render_rollback()},
        }


@dataclass
class TableResult:
    table: str
    status: str = "measured"  # measured | skipped
    reason: Optional[str] = None  # why skipped
    tenant: Optional[str] = None
    user: Optional[str] = None
    tenant_share: Optional[float] = None
    table_rows: Optional[int] = None  # the planner's estimate
    statements: list[StatementResult] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    isolated: bool = True  # False when the app role sees other tenants' rows (the overhead means nothing then)
    seconds: float = 0.0
    shown: str = ""  # the table's name as people read it (quoted when needed); ``table`` is the key

    @property
    def name(self) -> str:
        return self.shown or self.table

    def total(self, who: str) -> Optional[float]:
        pairs = [s for s in self.statements if s.overhead is not None]
        if not pairs:
            return None
        return sum(float(getattr(s, who).ms) for s in pairs)

    @property
    def overhead(self) -> Optional[float]:
        return ratio(self.total("app"), self.total("owner"))

    @property
    def proposed(self) -> list[Suggestion]:
        return [s for s in self.suggestions if s.proposed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "status": self.status,
            "reason": self.reason,
            "tenant": self.tenant,
            "user": self.user,
            "tenant_share": self.tenant_share,
            "table_rows": self.table_rows,
            "isolated": self.isolated,
            "ms": {"app": _ms(self.total("app")), "owner": _ms(self.total("owner"))},
            "overhead": self.overhead,
            "statements": [s.to_dict() for s in self.statements],
            "causes": [c.to_dict() for c in self.causes],
            "suggestions": [s.to_dict() for s in self.suggestions if s.proposed],
            "not_proposed": [s.to_dict() for s in self.suggestions if not s.proposed],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class TopStatement:
    """A pg_stat_statements entry touching tenant tables, explained as the app role."""

    query: str
    calls: int
    total_ms: float
    mean_ms: float
    tables: list[str]
    mode: str  # analyzed | generic plan
    app_ms: Optional[float] = None
    plan: list[str] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "calls": self.calls,
            "total_ms": _ms(self.total_ms),
            "mean_ms": _ms(self.mean_ms),
            "tables": self.tables,
            "mode": self.mode,
            "app_ms": _ms(self.app_ms),
            "plan": self.plan,
            "causes": [c.to_dict() for c in self.causes],
            "error": self.error,
        }


@dataclass
class StatStatements:
    available: bool
    reason: Optional[str] = None
    statements: list[TopStatement] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "statements": [s.to_dict() for s in self.statements],
        }


@dataclass
class AnalyzeReport:
    database: str
    server_version: str
    app_role: str
    context: dict[str, Any]
    settings: dict[str, Any]
    tables: list[TableResult] = field(default_factory=list)
    stat_statements: StatStatements = field(default_factory=lambda: StatStatements(False, "not looked at"))
    proof: dict[str, Any] = field(default_factory=dict)  # how suggestions were proven (scratch copy method)
    seconds: float = 0.0

    @property
    def measured(self) -> list[TableResult]:
        return [t for t in self.tables if t.status == "measured"]

    def slow(self, threshold: float) -> list[TableResult]:
        return [t for t in self.measured if t.isolated and (t.overhead or 0) >= threshold]

    @property
    def max_overhead(self) -> float:
        values = [t.overhead for t in self.measured if t.isolated and t.overhead is not None]
        return max(values) if values else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "tables": len(self.tables),
            "measured": len(self.measured),
            "skipped": len(self.tables) - len(self.measured),
            "with_causes": sum(1 for t in self.tables if t.causes),
            "causes": sum(len(t.causes) for t in self.tables),
            "suggestions": sum(len(t.proposed) for t in self.tables),
            "max_overhead": self.max_overhead,
            "seconds": round(self.seconds, 3),
        }

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "database": self.database,
            "server_version": self.server_version,
            "app_role": self.app_role,
            "tenant_context": self.context,
            "settings": self.settings,
            "summary": self.summary(),
            "proof": self.proof,
            "tables": [t.to_dict() for t in self.tables],
            "pg_stat_statements": self.stat_statements.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, sort_keys=False) + "\n"
