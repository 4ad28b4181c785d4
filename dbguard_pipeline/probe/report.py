"""What the isolation probe found, and its renderings (text, JSON, JUnit, Markdown).

Data only: a :class:`ProbeResult` per probe that ran (held or leaked, with its witness), a :class:`NotProbed` per
probe that could not run (with the reason; never counted as isolated), and the :class:`ProbeReport` that holds
them per relation. :class:`Target` names a relation the probe covers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from dbguard_pipeline.model.schema import Table, View
from dbguard_pipeline.report.junit import Case, Outcome, Suite, render_junit
from dbguard_pipeline.text import escape_controls

COMMANDS = ("select", "insert", "update", "delete")
JUNIT_SUITE = "dbguard.isolation"


def relation_commands(kind: str) -> tuple[str, ...]:
    """The commands probed on a relation of this kind: all four on tables, SELECT on views."""
    return COMMANDS if kind == "table" else ("select",)


@dataclass(frozen=True)
class Target:
    """A relation the probe covers: a tenant table, or a view that reads one."""

    schema: str
    name: str
    kind: str  # "table" | "view" | "materialized view"
    table: Optional[Table] = None
    view: Optional[View] = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def commands(self) -> tuple[str, ...]:
        return relation_commands(self.kind)


@dataclass(frozen=True)
class ProbeResult:
    schema: str
    table: str
    command: str  # select | insert | update | delete
    probe: str  # the probe's name (select_other_tenant, ...: probes.TABLE_PHASES)
    isolated: bool
    detail: str  # the witness: what was tried, as whom, and what came back
    statement: str = ""  # the shape of the statement that was tried
    rows: int = 0  # rows of the other tenant reached (or moved to it)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "table": self.table,
            "command": self.command,
            "isolated": self.isolated,
            "detail": self.detail,
            "probe": self.probe,
            "statement": self.statement,
            "rows": self.rows,
        }


@dataclass(frozen=True)
class NotProbed:
    schema: str
    table: str
    command: str
    probe: str
    reason: str
    state: str = ""  # an error state the statement met ("policy recursion"), "" for any other reason

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": self.schema,
            "table": self.table,
            "command": self.command,
            "probe": self.probe,
            "reason": self.reason,
        }
        if self.state:
            out["error"] = self.state
        return out


@dataclass
class ProbeReport:
    database: str  # user@host:port/db, never a password
    app_role: str
    tenant_context: dict[str, Any]
    results: list[ProbeResult] = field(default_factory=list)
    not_probed: list[NotProbed] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # relations probed, "schema.name"
    kinds: dict[str, str] = field(default_factory=dict)  # "schema.name" -> table | view | materialized view
    table_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # sequences that moved during the run ({"sequence", "before", "after", "by", "why"})
    sequences: list[dict[str, Any]] = field(default_factory=list)
    advisory_locks: dict[str, int] = field(default_factory=dict)  # relation -> session locks released after it
    # the tables a test row was inserted into (rolled back, but a table whose last page was full is a page larger)
    test_rows: dict[str, int] = field(default_factory=dict)  # table -> bytes larger afterwards (0: not grown)
    # relation -> [{"audit": [...], "probe": {...}, "note": ...}]: where the static audit and the probe disagree
    disagreements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    snapshot: Any = field(default=None, repr=False, compare=False)  # what was probed (not rendered)

    @property
    def leaks(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.isolated]

    def leaking_tables(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.leaks:
            seen.setdefault(r.qualified, None)
        return list(seen)

    def summary(self) -> dict[str, Any]:
        return {
            "tables": len(self.tables),
            "leaks": len(self.leaks),
            "leaking_tables": len(self.leaking_tables()),
            "probes": len(self.results),
            "not_probed": len(self.not_probed),
            "errors": len(self.errors()),
            "sequences_moved": len(self.sequences),
            "test_rows": len(self.test_rows),
            "disagreements": sum(len(v) for v in self.disagreements.values()),
            "seconds": round(self.seconds, 3),
        }

    def errors(self) -> dict[str, str]:
        """Relations whose statements PostgreSQL could not evaluate, with the error state (policy recursion)."""
        out: dict[str, str] = {}
        for n in self.not_probed:
            if n.state:
                out.setdefault(n.qualified, n.state)
        return out

    def outcome(self, qualified: str, command: str) -> tuple[str, list[ProbeResult], list[NotProbed]]:
        """Verdict for one table and command: "leak" (any probe leaked), "error" (no leak, and a statement on
        the table could not be evaluated: policy recursion), "isolated" (every probe ran and held), "not probed"
        (no leak, but at least one probe could not run)."""
        res = [r for r in self.results if r.qualified == qualified and r.command == command]
        nps = [n for n in self.not_probed if n.qualified == qualified and n.command == command]
        if any(not r.isolated for r in res):
            return "leak", res, nps
        if any(n.state for n in self.not_probed if n.qualified == qualified):
            return "error", res, nps  # a table PostgreSQL cannot evaluate on one command is never isolated
        if nps or not res:
            return "not probed", res, nps
        return "isolated", res, nps

    def commands_of(self, qualified: str) -> tuple[str, ...]:
        return relation_commands(self.kinds.get(qualified, "table"))

    def cases(self) -> list[tuple[str, str]]:
        """(qualified, command) pairs in report order: what the pytest plugin and JUnit output name."""
        return [(q, cmd) for q in self.tables for cmd in self.commands_of(q)]

    @property
    def all_commands(self) -> tuple[str, ...]:
        return COMMANDS

    def grid(self, marks: dict[str, str], absent: str) -> list[tuple[str, list[str]]]:
        """One row per relation, one verdict mark per command (``absent`` where the command is not probed)."""
        return [
            (q, [marks[self.outcome(q, cmd)[0]] if cmd in self.commands_of(q) else absent for cmd in COMMANDS])
            for q in self.tables
        ]

    # ------------------------------------------------------------------ renderings
    def to_json_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "tenant_context": self.tenant_context,
            "app_role": self.app_role,
            "results": [r.to_dict() for r in self.results],
            "not_probed": [n.to_dict() for n in self.not_probed],
            "summary": self.summary(),
            "warnings": list(self.warnings),
            "errors": self.errors(),
            "sequences_moved": list(self.sequences),
            "advisory_locks_released": dict(self.advisory_locks),
            "test_rows": dict(self.test_rows),
            "disagreements": self.disagreements,
            "table_seconds": {k: round(v, 4) for k, v in self.table_seconds.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_text(self, *, group_by: str = "table", verbose: bool = False, color: bool = False) -> str:
        """Summary first, then the problems grouped by relation (or by command); see
        :func:`dbguard_pipeline.report.grouped.render_isolation`."""
        from dbguard_pipeline.report.grouped import render_isolation

        return render_isolation(self, color=color, group_by=group_by, verbose=verbose)

    def to_junit(self) -> str:
        """One ``<testsuite>``, one test case per relation and command (as the pytest plugin names them)."""
        cases = []
        for q, cmd in self.cases():
            verdict, res, nps = self.outcome(q, cmd)
            seconds = self.table_seconds.get(q, 0.0) / len(self.commands_of(q))
            outcome, out = None, None
            if verdict == "leak":
                leaks = [r for r in res if not r.isolated]
                outcome = Outcome(
                    "failure", escape_controls(leaks[0].detail), type="TenantIsolationLeak", text=witnesses(leaks)
                )
            elif verdict == "error":
                outcome = Outcome(
                    "failure",
                    escape_controls(f"error: {not_probed_reason(nps)}"),
                    type="PolicyError",
                    text=not_probed_reason(nps),
                )
            elif verdict == "not probed":
                outcome = Outcome("skipped", escape_controls(f"not probed: {not_probed_reason(nps)}"))
            else:
                out = witnesses(res)
            cases.append(
                Case(
                    JUNIT_SUITE,
                    escape_controls(f"test_isolation[{q}-{cmd}]"),
                    f"{seconds:.4f}",
                    outcome=outcome,
                    system_out=out,
                )
            )
        return render_junit([Suite(JUNIT_SUITE, cases, time=f"{self.seconds:.3f}")])

    def markdown(self) -> str:
        """One row per relation, one column per command (for Dagster metadata)."""
        lines = ["| relation | select | insert | update | delete |", "|---|---|---|---|---|"]
        for q, cells in self.grid(
            {"leak": "**LEAK**", "isolated": "ok", "not probed": "not probed", "error": "**ERROR**"}, "-"
        ):
            lines.append(f"| {q.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def witnesses(results: list[ProbeResult], *, escape: bool = True) -> str:
    """One line per probe: ``probe: witness`` (control characters escaped unless ``escape`` is False)."""
    return "\n".join((escape_controls if escape else str)(f"{r.probe}: {r.detail}") for r in results)


def not_probed_reason(not_probed: list[NotProbed]) -> str:
    """Why a command counts as not probed: every reason, with its probe."""
    return "; ".join(f"{n.probe}: {n.reason}" for n in not_probed) or "no probe ran"
