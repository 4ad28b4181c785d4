"""``--format markdown``: the audit as a GitHub-flavoured Markdown document, for a pull-request comment or
``$GITHUB_STEP_SUMMARY`` (``dbguard validate --format markdown >> "$GITHUB_STEP_SUMMARY"``).

The verdict and the counts first, then one table per severity (rule, table, finding, fix), the tables that
could not be measured, and the ignored findings folded away. Every value from the database is escaped
(pipes, HTML, backticks, line breaks, control characters), so a hostile name can neither break the table nor
inject markup.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from dbguard_pipeline.model.findings import Severity
from dbguard_pipeline.text import escape_controls, one_line, plural, qname

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

_ICON = {Severity.CRITICAL: "🔴", Severity.WARNING: "🟠", Severity.INFO: "🔵"}
_TITLE = {Severity.CRITICAL: "Critical", Severity.WARNING: "Warnings", Severity.INFO: "Info"}


def cell(text: object) -> str:
    """One table cell: one line, HTML-escaped, pipes and backticks neutralised."""
    out = html.escape(escape_controls(one_line(text)), quote=False)
    return out.replace("|", "\\|").replace("`", "&#96;").replace("*", "\\*").replace("_", "\\_")


def code(text: object) -> str:
    """Inline code that survives any content (no backtick can close it: they are shown as &#96; in a <code>)."""
    escaped = html.escape(escape_controls(one_line(text))).replace("|", "&#124;").replace("`", "&#96;")
    return "<code>" + escaped.replace("*", "&#42;").replace("_", "&#95;") + "</code>"


def render_markdown(result: AuditResult, *, fail_on: str = "critical", config_source: str | None = None) -> str:
    s = result.summary()
    failed = bool(result.exit_code(fail_on))
    verdict = "❌ **FAIL**" if failed else "✅ **PASS**"
    out = [
        f"## dbguard validate: {code(result.database)}",
        "",
        f"{verdict} at `--fail-on {Severity(fail_on).value}`: "
        f"{s['critical']} critical, {plural(s['warning'], 'warning')}, {s['info']} info"
        + (f", {s['ignored']} ignored" if s["ignored"] else "")
        + (f", {len(result.not_measured)} not measured" if result.not_measured else "")
        + f" ({plural(len(result.tables), 'table')}, {plural(len(result.rules_run), 'rule')}, "
        f"PostgreSQL {cell(result.snapshot.server_version)})",
    ]
    if config_source:
        out.append(f"\nconfig: {code(config_source)}")
    for sev in (Severity.CRITICAL, Severity.WARNING, Severity.INFO):
        found = [f for f in result.findings if f.severity is sev]
        if not found:
            continue
        out += ["", f"### {_ICON[sev]} {_TITLE[sev]} ({len(found)})", ""]
        out += ["| rule | table | finding | fix |", "|---|---|---|---|"]
        for f in found:
            fix = code(f.remediation) if f.remediation else ""
            out.append(f"| {code(f.rule)} | {code(qname(f.schema, f.table))} | {cell(f.message)} | {fix} |")
    if result.not_measured:
        out += ["", f"### Not measured ({len(result.not_measured)})", "", "| table | reason |", "|---|---|"]
        out += [f"| {code(t)} | {cell(r)} |" for t, r in result.not_measured]
    if result.ignored:
        out += ["", f"<details><summary>Ignored ({len(result.ignored)})</summary>", ""]
        out += [f"- {code(f.cache_key)}" for f in result.ignored]
        out += ["", "</details>"]
    if not result.findings and not result.not_measured:
        out += ["", "No finding."]
    return "\n".join(out) + "\n"
