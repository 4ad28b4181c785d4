"""The analyze report for people: text for the terminal, markdown for Dagster metadata."""

from __future__ import annotations

from typing import Optional

from dbguard_pipeline.analyze.report import AnalyzeReport, Suggestion, TableResult
from dbguard_pipeline.text import escape_controls, plural


def _ms(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def _x(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.1f}x"


def headline(t: TableResult) -> str:
    """``RLS costs 37x on public.orders (1.9 ms -> 71 ms): <the first cause>``."""
    name = escape_controls(t.name)
    if t.status != "measured":
        return f"skipped {name}: {t.reason}"
    what = f"RLS costs {_x(t.overhead)} on {name} ({_ms(t.total('owner'))} ms -> {_ms(t.total('app'))} ms)"
    return what + (f": {t.causes[0].message}" if t.causes else "")


def suggestion_line(s: Suggestion) -> str:
    if s.proposed:
        proof = (
            f"measured on a scratch copy: {_ms(s.ms_before)} ms -> {_ms(s.ms_after)} ms ({_x(s.speedup)}), "
            f"overhead after {_x(s.overhead_after)}"
        )
        extra = "" if s.rollback_verified else ", rollback NOT verified"
        lint = "" if not s.lint else f", lint: {s.lint[0]}"
        return f"+ {escape_controls(s.title)}: {proof}{extra}{lint}"
    return f"- {escape_controls(s.title)}: {s.status}: {s.reason}"


def to_text(report: AnalyzeReport, threshold: float = 2.0) -> str:
    s = report.summary()
    ctx = report.context
    how = (
        f"the tenant's JWT claims ({ctx.get('setting')})"
        if ctx.get("mechanism") == "jwt"
        else f"the setting {ctx.get('setting')}"
    )
    out = [
        f"dbguard analyze: {escape_controls(report.database)} (PostgreSQL {report.server_version}), as "
        f"{escape_controls(report.app_role)} with {how}",
        f"{plural(s['measured'], 'tenant table')} measured ({s['skipped']} skipped), "
        f"{report.settings.get('runs')} timed runs each (median); {plural(s['causes'], 'cause')}, "
        f"{plural(s['suggestions'], 'suggestion')} proven on a scratch copy; {report.seconds:.1f} s",
        "",
    ]
    quiet = []
    for t in sorted(report.tables, key=lambda t: (t.status != "measured", -(t.overhead or 0.0), t.table)):
        if t.status != "measured" or (not t.causes and not t.suggestions and (t.overhead or 0) < threshold):
            quiet.append(t)
            continue
        out.append(headline(t))
        share = f" ({t.tenant_share:.1%} of the rows by pg_stats)" if t.tenant_share else ""
        out.append(f"  tenant {escape_controls(t.tenant)}{share}" + (f", user {t.user}" if t.user else ""))
        out.append(f"  {'statement':<36} {'owner ms':>10} {'app ms':>10} {'overhead':>9}")
        for st in t.statements:
            flag = " (timed out)" if st.app.timed_out else f" ({st.app.error})" if st.app.error else ""
            out.append(f"  {st.title:<36} {_ms(st.owner.ms):>10} {_ms(st.app.ms):>10} {_x(st.overhead):>9}{flag}")
        for note in t.notes:
            out.append(f"  note: {note}")
        if t.causes:
            out.append("  causes:")
            out.extend(f"    - {c.kind}: {escape_controls(c.message)} [{c.evidence}]" for c in t.causes)
        if t.suggestions:
            out.append("  suggestions:")
            out.extend(f"    {suggestion_line(x)}" for x in t.suggestions)
        out.append("")
    for t in quiet:
        out.append(
            headline(t)
            if t.status != "measured"
            else f"ok {escape_controls(t.name)}: {_x(t.overhead)} ({_ms(t.total('owner'))} ms -> "
            f"{_ms(t.total('app'))} ms)" + (f"; {t.notes[0]}" if t.notes else "")
        )
    out.append("")
    ps = report.stat_statements
    if not ps.available:
        out.append(f"pg_stat_statements: {ps.reason}")
    else:
        out.append(f"pg_stat_statements: {plural(len(ps.statements), 'top statement')} touching tenant tables")
        for e in ps.statements:
            ms = f"{_ms(e.app_ms)} ms as the app role" if e.app_ms is not None else e.mode
            out.append(f"  {e.calls:,} calls, {_ms(e.total_ms)} ms in total; {ms}: {escape_controls(e.query[:160])}")
            out.extend(f"    - {c.kind}: {escape_controls(c.message)}" for c in e.causes)
            if e.error:
                out.append(f"    error: {escape_controls(e.error)}")
    return "\n".join(out).rstrip() + "\n"


def _cell(text: object) -> str:
    return escape_controls(text).replace("|", "\\|")


def markdown(report: AnalyzeReport, limit: int = 200) -> str:
    rows = ["| table | overhead | owner ms | app ms | causes | proven suggestions |", "|---|---|---|---|---|---|"]
    measured = sorted(report.measured, key=lambda t: -(t.overhead or 0.0))
    for t in measured[:limit]:
        causes = "; ".join(c.message for c in t.causes) or "-"
        sugg = "; ".join(f"{s.title} ({_x(s.speedup)})" for s in t.proposed) or "-"
        rows.append(
            f"| {_cell(t.name)} | {_x(t.overhead)}{'' if t.isolated else ' (not isolated)'} | "
            f"{_ms(t.total('owner'))} | {_ms(t.total('app'))} | {_cell(causes)} | {_cell(sugg)} |"
        )
    if len(measured) > limit:
        rows.append(f"| ... {len(measured) - limit} more | | | | | |")
    skipped = [t for t in report.tables if t.status != "measured"]
    if skipped:
        rows.append("")
        rows.append("Skipped: " + "; ".join(f"{_cell(t.name)} ({_cell(t.reason)})" for t in skipped[:50]))
    return "\n".join(rows)
