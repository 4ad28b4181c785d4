"""The text report, for people: grouped like the original report (tenant data coverage, RLS status,
foreign-key integrity, then the other categories), a symbol per line (ok, critical, warning, info), the fix
under each finding, a closing count line. Colour (rich) on a terminal, plain text when piped or written to a
file. No clock time: the same database gives the same report, byte for byte (json has ``generated_at``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.text import escape_controls, one_line, plural, qname

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

SYMBOLS = {"ok": "✓", "critical": "✗", "warning": "⚠", "info": "ℹ"}
ASCII_SYMBOLS = {"ok": "[ok]", "critical": "[x]", "warning": "[!]", "info": "[i]"}
STYLES = {
    "ok": "green",
    "critical": "bold red",
    "warning": "yellow",
    "info": "cyan",
    "dim": "dim",
    "head": "bold",
    "rule": "dim",
}

# The sections after the first three, in this order; any other category follows alphabetically.
_FK_RULES = ("orphaned_rows", "cross_tenant_reference", "tenant_fk_missing")
_CATEGORY_ORDER = ("integrity", "tenancy", "security", "performance", "expectations")
_CATEGORY_TITLES = {
    "tenancy": "Tenancy",
    "integrity": "Data integrity",
    "performance": "Performance",
    "security": "Security",
    "expectations": "Expectations",
    "rls": "RLS status",
}

Segment = tuple[str, Optional[str]]  # (text, rich style)


class _Lines:
    """The report's lines as styled segments; every segment shown with control characters escaped (a
    hostile table name can neither break a line nor send terminal escape sequences)."""

    def __init__(self, color: bool):
        self.color = color
        enc = (getattr(sys.stdout, "encoding", None) or "utf-8").lower()
        self.symbols = SYMBOLS if color or "utf" in enc else ASCII_SYMBOLS
        self.lines: list[list[Segment]] = []

    def add(self, *segments: Segment) -> None:
        self.lines.append([(escape_controls(s), style) for s, style in segments])

    def item(self, kind: str, text: str, extra: str = "", indent: int = 2) -> None:
        segs: list[Segment] = [(" " * indent, None), (self.symbols[kind], STYLES[kind]), (" " + text, None)]
        if extra:
            segs.append((" " + extra, STYLES["dim"]))
        self.add(*segs)

    def fix(self, remediation: str) -> None:
        self.add(("      fix: ", STYLES["dim"]), (one_line(remediation), STYLES["dim"]))

    def head(self, title: str) -> None:
        self.blank()
        self.add((title, STYLES["head"]))

    def blank(self) -> None:
        self.lines.append([])

    def render(self) -> str:
        if not self.color:
            return "".join("".join(s for s, _ in line) + "\n" for line in self.lines)
        from io import StringIO

        from rich.console import Console
        from rich.text import Text

        buf = StringIO()
        console = Console(
            file=buf,
            force_terminal=True,
            color_system="standard",
            width=10_000,
            soft_wrap=True,
            highlight=False,
            emoji=False,
        )
        for line in self.lines:
            text = Text()
            for s, style in line:
                text.append(s, style=style or "")
            console.print(text)
        return buf.getvalue()


def _message(f: Finding) -> str:
    """The message after the table name: a message that starts with "schema.table " drops that prefix,
    since the line already begins with the name."""
    msg = one_line(f.message)
    for prefix in (f"{f.schema}.{f.table} ", f"{qname(f.schema, f.table)} "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _finding_lines(out: _Lines, f: Finding) -> None:
    out.item(f.severity.value, f"{qname(f.schema, f.table)}: {_message(f)}", f"[{f.rule}]")
    if f.remediation:
        out.fix(f.remediation)


def _category(rule_id: str) -> str:
    from dbguard_pipeline.rules import REGISTRY

    spec = REGISTRY.get(rule_id)
    return spec.category if spec else ""


def render_text(result: AuditResult, *, color: bool = False, fail_on: str = "critical") -> str:
    out = _Lines(color)
    snap = result.snapshot
    out.add(
        (f"dbguard validate: {result.database}", STYLES["head"]),
        (f" (PostgreSQL {snap.server_version}), {len(result.tables)} tables, {len(result.rules_run)} rules", None),
    )
    remaining = list(result.findings)

    def take(pred: Callable[[Finding], bool]) -> list[Finding]:
        nonlocal remaining
        got = [f for f in remaining if pred(f)]
        remaining = [f for f in remaining if not pred(f)]
        return got

    _coverage_section(out, result, take(lambda f: f.rule == "tenant_coverage"))
    _rls_section(out, result, take(lambda f: f.category == "rls"))
    _fk_section(out, result, take(lambda f: f.rule in _FK_RULES))
    order = {c: i for i, c in enumerate(_CATEGORY_ORDER)}
    for cat in sorted({f.category for f in remaining}, key=lambda c: (order.get(c, 99), c)):
        out.head(f"{_CATEGORY_TITLES.get(cat, cat.capitalize())}:")
        for f in remaining:
            if f.category == cat:
                _finding_lines(out, f)

    if result.not_measured:
        out.head("Not measured (treated as unknown, never as clean):")
        for table, reason in result.not_measured:
            out.item("warning", f"{table}: {one_line(reason)}")
    if result.ignored:
        out.head(f"Ignored by config ({len(result.ignored)}):")
        for f in result.ignored:
            out.add(("  - ", STYLES["dim"]), (f.cache_key, STYLES["dim"]))
    out.blank()
    out.add(("=" * 50, STYLES["rule"]))
    out.add(*_count_line(out, result, fail_on))
    return out.render()


def _coverage_section(out: _Lines, result: AuditResult, findings: list[Finding]) -> None:
    out.head("Tenant data coverage:")
    by_table = {(f.schema, f.table): f for f in findings}
    if not result.metrics_collected:
        out.item("info", "not measured (data rules not selected)")
    elif not result.coverage:
        out.item("info", "no table with the tenant column was measured")
    for row in result.coverage:
        f = by_table.pop((row.schema, row.table), None)
        approx = "~" if row.estimated else ""
        text = (
            f"{qname(row.schema, row.table)}: {row.percent:.1f}% complete "
            f"({approx}{row.with_tenant:,}/{approx}{row.rows:,})"
        )
        if f is None:
            out.item("ok", text, "(sampled)" if row.estimated else "")
        else:
            out.item(f.severity.value, text, f"[{f.rule}]")
            out.fix(f.remediation)
    for f in by_table.values():
        _finding_lines(out, f)


def _rls_section(out: _Lines, result: AuditResult, rls: list[Finding]) -> None:
    out.head("RLS status:")
    for f in rls:
        _finding_lines(out, f)
    flagged = {(f.schema, f.table) for f in rls} | {(f.schema, f.table) for f in result.ignored if f.category == "rls"}
    audited = set(result.tables)
    clean = [
        t
        for t in result.snapshot.tables
        if t.qualified in audited and t.rls_enabled and t.policies and (t.schema, t.name) not in flagged
    ]
    if "rls" not in {_category(r) for r in result.rules_run}:
        out.item("info", "no RLS rule selected")
        return
    for t in clean:
        out.item(
            "ok", f"{qname(t.schema, t.name)}: RLS enabled, {plural(len(t.policies), 'policy', 'policies')}, no finding"
        )
    if not rls and not clean:
        out.item("ok", "no finding")


def _fk_section(out: _Lines, result: AuditResult, fk: list[Finding]) -> None:
    out.head("Foreign-key integrity:")
    for f in fk:
        _finding_lines(out, f)
    if result.metrics_collected and result.metrics is not None:
        refs = [r for m in result.metrics.values() for r in getattr(m, "references", ())]
        n_orphan = sum(1 for r in refs if r.check_orphans)
        n_cross = sum(1 for r in refs if r.check_tenant)
        if not any(f.rule == "orphaned_rows" for f in fk):
            out.item(
                "ok",
                f"no orphaned rows ({plural(n_orphan, 'unenforced reference')} "
                f"checked; validated foreign keys hold by construction)",
            )
        if not any(f.rule == "cross_tenant_reference" for f in fk):
            out.item("ok", f"no cross-tenant references ({plural(n_cross, 'reference')} between tenant tables checked)")
    elif not fk:
        out.item("info", "data not measured (data rules not selected)")


def _count_line(out: _Lines, result: AuditResult, fail_on: str) -> list[Segment]:
    s = result.summary()
    parts = [
        (f"{s['critical']} critical", "critical"),
        (plural(s["warning"], "warning"), "warning"),
        (f"{s['info']} info", "info"),
    ]
    segs: list[Segment] = []
    for i, (txt, kind) in enumerate(parts):
        segs.append(((", " if i else ""), None))
        segs.append((out.symbols[kind] + " " + txt, STYLES[kind] if s[kind] else None))
    tail = []
    if s["ignored"]:
        tail.append(f"{s['ignored']} ignored")
    if result.not_measured:
        tail.append(f"{len(result.not_measured)} not measured")
    if tail:
        segs.append((" (" + ", ".join(tail) + ")", None))
    verdict = "FAIL" if result.exit_code(fail_on) else "PASS"
    segs.append(
        (f"  {verdict} at --fail-on {Severity(fail_on).value}", STYLES["critical" if verdict == "FAIL" else "ok"])
    )
    return segs
