"""``--format github``: GitHub Actions workflow commands, one annotation per finding
(``::error title=...::message``: critical -> error, warning -> warning, info -> notice), shown on the run's
summary page and in the log, then a plain closing line with the counts.

A finding is about a database object, not a line of a file, so the annotations carry no ``file=`` (GitHub
shows them on the run, not on the diff). Every value is escaped as the workflow-command syntax requires
(``%``, CR, LF; in properties also ``:`` and ``,``), so a hostile table name cannot end the command early or
inject another one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbguard_pipeline.model.findings import Severity
from dbguard_pipeline.text import escape_controls, one_line, qname

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

_COMMAND = {Severity.CRITICAL: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(result: AuditResult, *, fail_on: str = "critical") -> str:
    lines = []
    for f in result.findings:
        title = escape_controls(f"dbguard {f.rule}: {qname(f.schema, f.table)}")
        message = escape_controls(one_line(f.message))
        if f.remediation:
            message += f"\nfix: {escape_controls(one_line(f.remediation))}"
        lines.append(f"::{_COMMAND[f.severity]} title={escape_property(title)}::{escape_data(message)}")
    for table, reason in result.not_measured:
        lines.append(
            f"::warning title={escape_property(escape_controls('dbguard not measured: ' + table))}::"
            f"{escape_data(escape_controls(table + ' was not measured: ' + one_line(reason)))}"
        )
    s = result.summary()
    verdict = "FAIL" if result.exit_code(fail_on) else "PASS"
    extra = f", {len(result.not_measured)} not measured" if result.not_measured else ""
    lines.append(
        f"dbguard validate {escape_controls(one_line(result.database))}: {s['critical']} critical, {s['warning']} warning, "
        f"{s['info']} info, {s['ignored']} ignored{extra}: {verdict} at --fail-on {fail_on}"
    )
    return "\n".join(lines) + "\n"
