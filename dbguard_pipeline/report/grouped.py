"""The text report that scales (``dbguard validate``'s default): the verdict and the counts first, then the
problems grouped by rule (``--group-by rule``, worst rule first) or by table (``--group-by table``), one line
per finding; a fix that is the same command for every table of a rule is printed once under the rule.
Passing tables and ignored findings are counted, and listed only with ``verbose``; the count line closes
the report too, so the verdict is at both ends of a long log.

The sectioned report of :mod:`.text` (coverage, RLS status, foreign keys, ...) stays the demo's tour.

``dbguard test-isolation``'s text (:func:`render_isolation`) has the same shape: verdict first, the problems
(LEAK, error, not probed) grouped by relation or by command, the isolated relations only with ``verbose``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.report.text import STYLES, Segment, _count_line, _Lines, _message
from dbguard_pipeline.text import ident, one_line, plural, qname

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult
    from dbguard_pipeline.probe.report import NotProbed, ProbeReport, ProbeResult

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


# --------------------------------------------------------------------------- dbguard test-isolation
ISOLATION_GROUPINGS = ("table", "command")
_VERDICT_KIND = {"leak": "critical", "error": "critical", "not probed": "warning", "isolated": "ok"}


def _isolation_summary(report: ProbeReport) -> str:
    s = report.summary()
    traces = "all rolled back"
    if report.sequences:
        traces = (
            "rolled back, but "
            + ", ".join(
                f"sequence {m['sequence']} moved by {m['by'] if m['by'] is not None else 'its first value'}"
                for m in report.sequences
            )
            + f" ({report.sequences[0]['why']})"
        )
    if report.test_rows:
        traces += f"; test rows inserted and rolled back in {plural(len(report.test_rows), 'table')}"
    if report.advisory_locks:
        traces += "; session advisory locks taken during the probe were released after " + ", ".join(
            f"{q} ({n})" for q, n in report.advisory_locks.items()
        )
    return (
        f"{s['tables']} relations, {s['probes']} probes: {s['leaks']} leaks in {s['leaking_tables']} "
        f"relations, {s['not_probed']} not probed"
        + (f", ERROR in {plural(s['errors'], 'relation')}" if s["errors"] else "")
        + f" ({report.seconds:.2f} s; {traces})"
    )


def _isolation_count_line(report: ProbeReport) -> list[Segment]:
    s = report.summary()
    failed = bool(s["leaks"] or s["errors"])
    verdict = ("FAIL", "critical") if failed else ("PASS", "ok")
    return [
        (f"{verdict[0]} ", STYLES[verdict[1]]),
        (_isolation_summary(report), None),
    ]


def _relation_names(report: ProbeReport) -> dict[str, str]:
    """Each relation's "schema.name" key -> its name as people read it (parts quoted when PostgreSQL needs it)."""
    names = {r.qualified: qname(r.schema, r.table) for r in report.results}
    names.update({n.qualified: qname(n.schema, n.table) for n in report.not_probed})
    return names


def _shown(q: str, names: dict[str, str]) -> str:
    if q in names:
        return names[q]
    schema, _, name = q.partition(".")
    return qname(schema, name)


def _not_probed_line(n: NotProbed, with_table: bool) -> str:
    where = f"{qname(n.schema, n.table)} " if with_table else ""
    return f"{where}{n.command} ({n.probe}): not probed: {n.reason}"


def _leak_segments(r: ProbeResult, with_table: bool, drop: str = "") -> list[Segment]:
    where = f" {qname(r.schema, r.table)}" if with_table else ""
    what = f" {r.command}" if not with_table else ""
    detail = one_line(r.detail)
    if drop and detail.endswith(drop):
        detail = detail[: -len(drop)]
    return [("    ", None), ("LEAK", STYLES["critical"]), (f"{where}{what} ({r.probe}): {detail}", None)]


def _shared_note(leaks: Sequence[ProbeResult]) -> str:
    """A trailing " (...)" note every witness of a relation ends with ("row level security is disabled on this
    table"): said once in the relation's header instead of on every line."""
    if len(leaks) < 2:
        return ""
    first = one_line(leaks[0].detail)
    if not first.endswith(")") or " (" not in first:
        return ""
    note = first[first.rindex(" (") :]
    return note if all(one_line(r.detail).endswith(note) for r in leaks) else ""


COLLAPSE = 3  # more relations than this failing the same way are listed once, as validate lists a rule's tables


def _unnamed(text: str, q: str) -> str:
    """A witness or reason with its relation's name replaced, to compare relations that fail the same way."""
    schema, _, name = q.partition(".")
    for shown in (qname(schema, name), q):
        text = text.replace(shown, "TABLE")
    return one_line(text)


def _relation_problems(report: ProbeReport, q: str, errors: dict[str, str]):
    leaks = [r for r in report.leaks if r.qualified == q]
    nps = [n for n in report.not_probed if n.qualified == q]
    parts = []
    if leaks:
        parts.append(plural(len(leaks), "leak"))
    if q in errors:
        parts.append(f"error: {errors[q]}")
    if nps:
        parts.append(f"{len(nps)} not probed")
    note = _shared_note(leaks)
    # what the relation's problems are, without its name and its row counts: relations alike share it
    shape = (
        tuple((r.command, r.probe) for r in leaks),
        note,
        errors.get(q, ""),
        tuple((n.command, n.probe, _unnamed(n.reason, q)) for n in nps),
    )
    return leaks, nps, parts, note, shape


def _isolation_by_table(out: _Lines, report: ProbeReport, problems: list[str]) -> None:
    errors = report.errors()
    names = _relation_names(report)
    facts = {q: _relation_problems(report, q, errors) for q in problems}
    groups: dict[tuple, list[str]] = {}
    for q in problems:
        groups.setdefault(facts[q][4], []).append(q)
    for q in problems:
        same = groups[facts[q][4]]
        collapsed = len(same) > COLLAPSE
        if collapsed and q != same[0]:
            continue  # listed under the first relation of its group
        leaks, nps, parts, note, _ = facts[q]
        kind = "critical" if leaks or q in errors else "warning"
        out.blank()
        if collapsed:
            out.add(
                (out.symbols[kind], STYLES[kind]),
                (f" {plural(len(same), 'relation')}", STYLES["head"]),
                (", each: " + ", ".join(parts) + note, None),
            )
            out.add(("    e.g. ", STYLES["dim"]), (_shown(q, names) + ":", STYLES["head"]))
        else:
            out.add(
                (out.symbols[kind], STYLES[kind]),
                (f" {_shown(q, names)}", STYLES["head"]),
                (": " + ", ".join(parts) + note, None),
            )
        for r in leaks:
            out.add(*_leak_segments(r, with_table=False, drop=note))
        for n in nps:
            out.add(("    ", None), (_not_probed_line(n, with_table=False), STYLES["warning"]))
        if collapsed:
            out.add((f"  on {plural(len(same), 'relation')}:", None))
            for line in _wrapped([_shown(x, names) for x in same]):
                out.add((line, STYLES[kind]))


def _isolation_by_command(out: _Lines, report: ProbeReport) -> None:
    for cmd in report.all_commands:
        leaks = [r for r in report.leaks if r.command == cmd]
        nps = [n for n in report.not_probed if n.command == cmd and not n.state]
        if not leaks and not nps:
            continue
        tables = len({r.qualified for r in leaks})
        parts = [f"{plural(len(leaks), 'leak')} in {plural(tables, 'relation')}"] if leaks else []
        if nps:
            parts.append(f"{len(nps)} not probed")
        kind = "critical" if leaks else "warning"
        out.blank()
        out.add((out.symbols[kind], STYLES[kind]), (f" {cmd.upper()}", STYLES["head"]), (": " + ", ".join(parts), None))
        by_probe: dict[str, list[ProbeResult]] = {}
        for r in leaks:
            by_probe.setdefault(r.probe, []).append(r)
        for probe, found in by_probe.items():
            if len(found) <= COLLAPSE:
                for r in found:
                    out.add(*_leak_segments(r, with_table=True))
                continue
            first = found[0]
            out.add(
                ("    ", None),
                ("LEAK", STYLES["critical"]),
                (
                    f" {probe} on {plural(len(found), 'relation')}, e.g. {qname(first.schema, first.table)}: "
                    f"{one_line(first.detail)}",
                    None,
                ),
            )
            for line in _wrapped([qname(r.schema, r.table) for r in found], indent="      "):
                out.add((line, STYLES["critical"]))
        for n in nps:
            out.add(("    ", None), (_not_probed_line(n, with_table=True), STYLES["warning"]))
    errors = report.errors()
    names = _relation_names(report)
    if errors:
        out.head("Errors (statements PostgreSQL cannot evaluate: never isolated):")
        for q, state in errors.items():
            out.add(("  ", None), (f"{_shown(q, names)}: error: {state}", STYLES["critical"]))


def render_isolation(
    report: ProbeReport, *, color: bool = False, group_by: str = "table", verbose: bool = False
) -> str:
    """``dbguard test-isolation``'s text: the verdict and counts first, then the problems (leaks with their
    witness, errors, probes that could not run) grouped by relation (worst first, then probe order) or by
    command; relations where every probe held are counted, and listed (the full grid) only with ``verbose``.
    The count line closes the report too."""
    out = _Lines(color)
    names = _relation_names(report)
    ctx = report.tenant_context
    out.add((f"dbguard test-isolation: {report.database}", STYLES["head"]), (f" as {ident(report.app_role)}", None))
    out.add(
        (
            f"  tenant A = {ctx.get('tenant_a')}, tenant B = {ctx.get('tenant_b')} "
            f"(context: {ctx.get('mechanism')} {ctx.get('setting')}"
            + (f", sub {ctx['user_a']}" if ctx.get("user_a") else "")
            + ")",
            STYLES["dim"],
        )
    )
    out.add(*_isolation_count_line(report))
    rank = {"leak": 0, "error": 1, "not probed": 2, "isolated": 3}
    worst: dict[str, int] = {}
    for q in report.tables:
        worst[q] = min(rank[report.outcome(q, cmd)[0]] for cmd in report.commands_of(q))
    order = {q: i for i, q in enumerate(report.tables)}
    problems = sorted((q for q in report.tables if worst[q] < rank["isolated"]), key=lambda q: (worst[q], order[q]))
    passing = len(report.tables) - len(problems)
    out.add(
        (f"{plural(len(problems), 'relation')} with problems, {passing} isolated", STYLES["dim"]),
        ("" if verbose or not passing else " (--verbose lists them)", STYLES["dim"]),
    )
    if group_by == "command":
        _isolation_by_command(out, report)
    else:
        _isolation_by_table(out, report, problems)
    if report.disagreements:
        out.head(
            "The static audit and the probe disagree (a blind spot of the probe or a false positive of the audit):"
        )
        for q, items in report.disagreements.items():
            for d in items:
                out.add((f"  {_shown(q, names)}: {one_line(d['note'])}", None))
    if report.warnings:
        out.blank()
        for w in report.warnings:
            out.add(("warning: ", STYLES["warning"]), (one_line(w), None))
    if verbose and report.tables:
        out.head(f"Every relation ({len(report.tables)}):")
        marks = {"leak": "LEAK", "isolated": "ok", "not probed": "not probed", "error": "ERROR"}
        kinds = {v: _VERDICT_KIND[k] for k, v in marks.items()}
        shown = {q: _shown(q, names) for q in report.tables}
        width = max([len(x) for x in shown.values()] + [5])
        out.add((f"  {'relation'.ljust(width)}  select      insert      update      delete", STYLES["dim"]))
        for q, cells in report.grid(marks, "-"):
            segs: list[Segment] = [(f"  {shown.get(q, q).ljust(width)}", None)]
            for c in cells:
                segs.append(("  ", None))
                segs.append((c.ljust(10), STYLES[kinds[c]] if c in kinds else STYLES["dim"]))
            segs[-1] = (segs[-1][0].rstrip(), segs[-1][1])
            out.add(*segs)
    out.blank()
    out.add(("=" * 50, STYLES["rule"]))
    out.add(*_isolation_count_line(report))
    return out.render()
