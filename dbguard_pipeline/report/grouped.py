"""The text report that scales (``dbguard validate``'s default): the verdict and the counts first, then the
problems grouped by rule (``--group-by rule``, worst rule first) or by table (``--group-by table``), one line
per finding; a fix that is the same command for every table of a rule is printed once under the rule.
Passing tables and ignored findings are counted, and listed only with ``verbose``; the count line closes
the report too, so the verdict is at both ends of a long log.

The sectioned report of :mod:`.text` (coverage, RLS status, foreign keys, ...) stays the demo's tour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.report.text import STYLES, _count_line, _Lines, _message
from dbguard_pipeline.text import one_line, plural, qname

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

GROUPINGS = ("rule", "table")


def _title(rule_id: str) -> str:
    from dbguard_pipeline.rules import REGISTRY

    spec = REGISTRY.get(rule_id)
    return spec.title if spec else ""


def _shape(f: Finding, text: str) -> str:
    for name in (qname(f.schema, f.table), f"{f.schema}.{f.table}"):
        text = text.replace(name, "TABLE")
    return text


def _shared(findings: Sequence[Finding], text_of: Callable[[Finding], str]) -> Optional[str]:
    """The text common to every finding of a group once its table name is replaced by TABLE, if any."""
    if len(findings) < 2 or not all(text_of(f) for f in findings):
        return None
    shapes = {_shape(f, one_line(text_of(f))) for f in findings}
    return shapes.pop() if len(shapes) == 1 else None


def _wrapped(names: Sequence[str], width: int = 110, indent: str = "    ") -> list[str]:
    lines, line = [], ""
    for name in names:
        piece = name if not line else ", " + name
        if line and len(indent) + len(line) + len(piece) > width:
            lines.append(indent + line + ",")
            line = name
        else:
            line += piece
    if line:
        lines.append(indent + line)
    return lines


def _worst_first(groups: dict[str, list[Finding]]) -> list[tuple[str, list[Finding]]]:
    return sorted(groups.items(), key=lambda kv: (-max(f.severity.rank for f in kv[1]), -len(kv[1]), kv[0]))


def _by_rule(out: _Lines, findings: Sequence[Finding]) -> None:
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.rule, []).append(f)
    for rule_id, found in _worst_first(groups):
        worst = max(found, key=lambda f: f.severity.rank).severity.value
        out.blank()
        title = _title(rule_id)
        out.add(
            (out.symbols[worst], STYLES[worst]),
            (f" {rule_id}", STYLES["head"]),
            (f" ({len(found)})" + (f": {one_line(title)}" if title else ""), None),
        )
        shared = _shared(found, lambda f: f.remediation)
        if shared is not None and "TABLE" not in shared:
            shared = None
        message = _shared(found, _message) if len(found) > 3 else None
        if message is not None and len({f.severity for f in found}) == 1:
            # the same problem on many tables: say it once, then the tables
            out.add(("  TABLE: ", None), (message, None))
            if shared:
                out.add(("    fix: ", STYLES["dim"]), (shared, STYLES["dim"]))
            out.add(("  on " + plural(len(found), "table") + ":", None))
            for line in _wrapped([qname(f.schema, f.table) for f in found]):
                out.add((line, STYLES[worst]))
            continue
        if shared:
            out.add(("    fix: ", STYLES["dim"]), (shared, STYLES["dim"]))
        for f in found:
            sym = [] if f.severity.value == worst else [(out.symbols[f.severity.value] + " ", STYLES[f.severity.value])]
            out.add(
                ("  ", None), *sym, (qname(f.schema, f.table), STYLES[f.severity.value]), (": " + _message(f), None)
            )
            if f.remediation and not shared:
                out.fix(f.remediation)


def _by_table(out: _Lines, findings: Sequence[Finding]) -> None:
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(qname(f.schema, f.table), []).append(f)
    for table, found in _worst_first(groups):
        worst = max(found, key=lambda f: f.severity.rank).severity.value
        out.blank()
        out.add((out.symbols[worst], STYLES[worst]), (f" {table}", STYLES["head"]), (f" ({len(found)})", None))
        for f in sorted(found, key=lambda f: (-f.severity.rank, f.rule)):
            out.item(f.severity.value, _message(f), f"[{f.rule}]")
            if f.remediation:
                out.fix(f.remediation)


def render_grouped(
    result: AuditResult,
    *,
    color: bool = False,
    fail_on: str = "critical",
    group_by: str = "rule",
    verbose: bool = False,
    quiet: bool = False,
    config_source: Optional[str] = None,
) -> str:
    out = _Lines(color)
    if quiet:  # the count line alone
        out.add(*_count_line(out, result, fail_on))
        return out.render()
    snap = result.snapshot
    out.add(
        (f"dbguard validate: {result.database}", STYLES["head"]),
        (
            f" (PostgreSQL {snap.server_version}), {plural(len(result.tables), 'table')}, "
            f"{plural(len(result.rules_run), 'rule')}",
            None,
        ),
        (f", config {config_source}" if config_source else ", default config (no dbguard.yaml found)", STYLES["dim"]),
    )
    out.add(*_count_line(out, result, fail_on))
    flagged = {f"{f.schema}.{f.table}" for f in result.findings}
    not_measured = {t for t, _ in result.not_measured}
    passing = [t for t in result.tables if t not in flagged and t not in not_measured]
    out.add(
        (f"{plural(len(flagged), 'table')} with findings, {len(passing)} without", STYLES["dim"]),
        ("" if verbose or not passing else " (--verbose lists them)", STYLES["dim"]),
    )
    if group_by == "table":
        _by_table(out, result.findings)
    else:
        _by_rule(out, result.findings)
    if result.not_measured:
        out.head(f"Not measured ({len(result.not_measured)}; treated as unknown, never as clean):")
        for table, reason in result.not_measured:
            out.item("warning", f"{table}: {one_line(reason)}")
    if result.ignored:
        if verbose:
            out.head(f"Ignored ({len(result.ignored)}: config ignore or --baseline):")
            for f in result.ignored:
                out.add(("  - ", STYLES["dim"]), (f.cache_key, STYLES["dim"]))
        else:
            out.blank()
            out.add(
                (
                    f"{plural(len(result.ignored), 'finding')} ignored (config ignore or --baseline; "
                    "--verbose lists them)",
                    STYLES["dim"],
                )
            )
    if verbose and passing:
        cov = {f"{c.schema}.{c.table}": c for c in result.coverage}
        out.head(f"Without finding ({len(passing)}):")
        for t in passing:
            c = cov.get(t)
            extra = f"{c.percent:.1f}% tenant coverage" if c is not None else ""
            out.item("ok", t, extra)
    out.blank()
    out.add(("=" * 50, STYLES["rule"]))
    out.add(*_count_line(out, result, fail_on))
    return out.render()
