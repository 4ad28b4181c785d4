"""Reports from one AuditResult: text for people, json, sarif (GitHub code scanning) and junit for CI.

* text: grouped like the original report (tenant data coverage, RLS status, foreign-key integrity, then the
  other categories), a symbol per line (ok, critical, warning, info), the fix under each finding, a closing
  count line. Colour (rich) on a terminal, plain text when piped or written to a file.
* json: ``{"database", "generated_at", "summary", "findings", "coverage", ...}`` (AuditResult.to_json_dict).
* sarif: SARIF 2.1.0, one run, the rules that ran in ``tool.driver.rules`` with their help text, one result
  per finding with a logical ("schema.table") and a physical location; tables that could not be measured
  are tool execution notifications.
* junit: one testsuite per rule, one testcase per rule x audited table; a failure for findings at or above
  ``fail_on``; ignored findings are skipped; tables that could not be measured are errors of the
  ``data_metrics`` suite.

Nothing here reads the database or a DSN: no password can reach a report.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from typing import Optional
from urllib.parse import quote

from dbguard_pipeline import __version__
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.model.findings import Finding, Severity

FORMATS = ("text", "json", "sarif", "junit")

SYMBOLS = {"ok": "✓", "critical": "✗", "warning": "⚠", "info": "ℹ"}
ASCII_SYMBOLS = {"ok": "[ok]", "critical": "[x]", "warning": "[!]", "info": "[i]"}
STYLES = {"ok": "green", "critical": "bold red", "warning": "yellow", "info": "cyan", "dim": "dim",
          "head": "bold", "rule": "dim"}

# Text report sections: (title, predicate on a finding). Order is the report's order; the rest follow by category.
_FK_RULES = ("orphaned_rows", "cross_tenant_reference", "tenant_fk_missing")
_CATEGORY_TITLES = {"tenancy": "Tenancy", "integrity": "Data integrity", "performance": "Performance",
                    "security": "Security", "expectations": "Expectations", "rls": "RLS status"}


def render(result, fmt: str = "text", *, fail_on: str = "critical", color: Optional[bool] = None) -> str:
    """The report as a string. ``color=None``: colour when standard output is a terminal (and NO_COLOR is
    not set)."""
    if fmt == "text":
        if color is None:
            color = _stdout_is_tty() and not os.environ.get("NO_COLOR")
        return render_text(result, color=color, fail_on=fail_on)
    if fmt == "json":
        return json.dumps(result.to_json_dict(), indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt == "sarif":
        return json.dumps(to_sarif(result), indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt == "junit":
        return to_junit(result, fail_on=fail_on)
    raise DbguardError(f"unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- text
class _Lines:
    def __init__(self, color: bool):
        self.color = color
        enc = (getattr(sys.stdout, "encoding", None) or "utf-8").lower()
        self.symbols = SYMBOLS if color or "utf" in enc else ASCII_SYMBOLS
        self.lines: list[list[tuple[str, Optional[str]]]] = []

    def add(self, *segments: tuple[str, Optional[str]]) -> None:
        self.lines.append([(_safe(s), style) for s, style in segments])

    def item(self, kind: str, text: str, extra: str = "", indent: int = 2) -> None:
        segs = [(" " * indent, None), (self.symbols[kind], STYLES[kind]), (" " + text, None)]
        if extra:
            segs.append((" " + extra, STYLES["dim"]))
        self.add(*segs)

    def blank(self) -> None:
        self.lines.append([])

    def render(self) -> str:
        if not self.color:
            return "".join("".join(s for s, _ in line) + "\n" for line in self.lines)
        from io import StringIO

        from rich.console import Console
        from rich.text import Text

        buf = StringIO()
        console = Console(file=buf, force_terminal=True, color_system="standard", width=10_000, soft_wrap=True,
                          highlight=False, emoji=False)
        for line in self.lines:
            text = Text()
            for s, style in line:
                text.append(s, style=style or "")
            console.print(text)
        return buf.getvalue()


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _safe(text: str) -> str:
    """Control characters (from hostile identifiers or data) shown escaped: a table name can neither
    break a line nor send terminal escape sequences."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _ident(name: str) -> str:
    return name if _PLAIN_IDENT.match(name) else '"' + name.replace('"', '""') + '"'


def _name(schema: str, table: str) -> str:
    """How people read a table name: quoted like SQL when it needs quotes, so that odd names stay readable."""
    return f"{_ident(schema)}.{_ident(table)}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _message(f: Finding) -> str:
    """The message after the table name: a message that starts with "schema.table " drops that prefix,
    since the line already begins with the name."""
    msg = _one_line(f.message)
    for prefix in (f"{f.schema}.{f.table} ", f"{_name(f.schema, f.table)} "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _finding_lines(out: _Lines, f: Finding) -> None:
    out.item(f.severity.value, f"{_name(f.schema, f.table)}: {_message(f)}", f"[{f.rule}]")
    if f.remediation:
        out.add(("      fix: ", STYLES["dim"]), (_one_line(f.remediation), STYLES["dim"]))


def render_text(result, *, color: bool = False, fail_on: str = "critical") -> str:
    out = _Lines(color)
    snap = result.snapshot
    # No clock time in the text: the same database gives the same report, byte for byte (json has generated_at).
    out.add((f"dbguard validate: {result.database}", STYLES["head"]),
            (f" (PostgreSQL {snap.server_version}), {len(result.tables)} tables, {len(result.rules_run)} rules",
             None))
    remaining = list(result.findings)

    def take(pred) -> list[Finding]:
        nonlocal remaining
        got = [f for f in remaining if pred(f)]
        remaining = [f for f in remaining if not pred(f)]
        return got

    # Tenant data coverage
    out.blank()
    out.add(("Tenant data coverage:", STYLES["head"]))
    cov_findings = {(f.schema, f.table): f for f in take(lambda f: f.rule == "tenant_coverage")}
    if not result.metrics_collected:
        out.item("info", "not measured (data rules not selected)")
    elif not result.coverage:
        out.item("info", "no table with the tenant column was measured")
    for row in result.coverage:
        f = cov_findings.pop((row.schema, row.table), None)
        approx = "~" if row.estimated else ""
        text = (f"{_name(row.schema, row.table)}: {row.percent:.1f}% complete "
                f"({approx}{row.with_tenant:,}/{approx}{row.rows:,})")
        if f is None:
            out.item("ok", text, "(sampled)" if row.estimated else "")
        else:
            out.item(f.severity.value, text, f"[{f.rule}]")
            out.add(("      fix: ", STYLES["dim"]), (_one_line(f.remediation), STYLES["dim"]))
    for f in cov_findings.values():
        _finding_lines(out, f)

    # RLS status
    out.blank()
    out.add(("RLS status:", STYLES["head"]))
    rls = take(lambda f: f.category == "rls")
    for f in rls:
        _finding_lines(out, f)
    flagged = {(f.schema, f.table) for f in rls} | {(f.schema, f.table) for f in result.ignored if f.category == "rls"}
    clean = [t for t in snap.tables if t.qualified in set(result.tables) and t.rls_enabled and t.policies
             and (t.schema, t.name) not in flagged]
    if "rls" not in {_category(r) for r in result.rules_run}:
        out.item("info", "no RLS rule selected")
    else:
        for t in clean:
            out.item("ok", f"{_name(t.schema, t.name)}: RLS enabled, {len(t.policies)} "
                           f"polic{'y' if len(t.policies) == 1 else 'ies'}, no finding")
        if not rls and not clean:
            out.item("ok", "no finding")

    # Foreign-key integrity
    out.blank()
    out.add(("Foreign-key integrity:", STYLES["head"]))
    fk = take(lambda f: f.rule in _FK_RULES)
    for f in fk:
        _finding_lines(out, f)
    if result.metrics_collected and result.metrics is not None:
        refs = [r for m in result.metrics.values() for r in getattr(m, "references", ())]
        n_orphan = sum(1 for r in refs if r.check_orphans)
        n_cross = sum(1 for r in refs if r.check_tenant)
        if not any(f.rule == "orphaned_rows" for f in fk):
            out.item("ok", f"no orphaned rows ({n_orphan} unenforced reference{'s' if n_orphan != 1 else ''} "
                           f"checked; validated foreign keys hold by construction)")
        if not any(f.rule == "cross_tenant_reference" for f in fk):
            out.item("ok", f"no cross-tenant references ({n_cross} reference{'s' if n_cross != 1 else ''} "
                           f"between tenant tables checked)")
    elif not fk:
        out.item("info", "data not measured (data rules not selected)")

    # The other categories, in a fixed order
    order = ["integrity", "tenancy", "security", "performance", "expectations"]
    cats = sorted({f.category for f in remaining}, key=lambda c: (order.index(c) if c in order else 99, c))
    for cat in cats:
        items = take(lambda f, c=cat: f.category == c)
        out.blank()
        out.add((f"{_CATEGORY_TITLES.get(cat, cat.capitalize())}:", STYLES["head"]))
        for f in items:
            _finding_lines(out, f)

    if result.not_measured:
        out.blank()
        out.add(("Not measured (treated as unknown, never as clean):", STYLES["head"]))
        for table, reason in result.not_measured:
            out.item("warning", f"{table}: {_one_line(reason)}")

    if result.ignored:
        out.blank()
        out.add((f"Ignored by config ({len(result.ignored)}):", STYLES["head"]))
        for f in result.ignored:
            out.add(("  - ", STYLES["dim"]), (f.cache_key, STYLES["dim"]))

    s = result.summary()
    out.blank()
    out.add(("=" * 50, STYLES["rule"]))
    parts = [(f"{s['critical']} critical", "critical"), (f"{s['warning']} warning{'s' if s['warning'] != 1 else ''}",
                                                            "warning"), (f"{s['info']} info", "info")]
    segs: list[tuple[str, Optional[str]]] = []
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
    segs.append((f"  {verdict} at --fail-on {Severity(fail_on).value}", STYLES["critical" if verdict == "FAIL" else "ok"]))
    out.add(*segs)
    return out.render()


def _category(rule_id: str) -> str:
    from dbguard_pipeline.rules import REGISTRY

    spec = REGISTRY.get(rule_id)
    return spec.category if spec else ""


# --------------------------------------------------------------------------- SARIF
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.CRITICAL: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.0", Severity.WARNING: "5.0", Severity.INFO: "2.0"}
INFORMATION_URI = "https://github.com/dbguard/dbguard"


def _artifact_uri(database: str, schema: str, table: str) -> str:
    return "/".join(quote(p, safe="") for p in ("postgresql", database, schema, table))


def _location(database: str, schema: str, table: str, obj: Optional[str] = None) -> dict:
    logical = [{"name": table, "fullyQualifiedName": f"{schema}.{table}", "kind": "resource"}]
    if obj:
        logical.append({"name": obj, "fullyQualifiedName": f"{schema}.{table}.{obj}", "kind": "member"})
    return {
        "physicalLocation": {"artifactLocation": {"uri": _artifact_uri(database, schema, table)},
                             "region": {"startLine": 1}},
        "logicalLocations": logical,
    }


def to_sarif(result) -> dict:
    from dbguard_pipeline.rules import REGISTRY

    rule_ids = sorted(set(result.rules_run) | {f.rule for f in result.findings})
    rules, index = [], {}
    for rid in rule_ids:
        spec = REGISTRY.get(rid)
        index[rid] = len(rules)
        sev = spec.severity if spec else Severity.WARNING
        title = spec.title if spec else rid
        desc = (spec.description if spec else "") or title
        rules.append({
            "id": rid,
            "name": "".join(p.capitalize() for p in rid.split("_")),
            "shortDescription": {"text": title},
            "fullDescription": {"text": desc},
            "help": {"text": f"{desc}\nSee docs/rules.md#{rid} for how to fix it.",
                     "markdown": f"**{title}**\n\n{desc}\n\nSee `docs/rules.md#{rid}` for how to fix it."},
            "defaultConfiguration": {"level": _LEVEL[sev]},
            "properties": {"tags": ["security", spec.category if spec else "dbguard"],
                           "security-severity": _SECURITY_SEVERITY[sev], "precision": "high"},
        })
    results = []
    for f in result.findings:
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _LEVEL[f.severity],
            "message": {"text": f"{_one_line(f.message)}\nFix: {_one_line(f.remediation)}" if f.remediation
                        else _one_line(f.message)},
            "locations": [_location(result.database, f.schema, f.table, f.object)],
            "partialFingerprints": {"dbguardCacheKey/v1": hashlib.sha256(f.cache_key.encode()).hexdigest()},
            "properties": {"cache_key": f.cache_key, "severity": f.severity.value, "category": f.category,
                           "object": f.object},
        })
    notifications = []
    for table, reason in result.not_measured:
        schema, _, name = table.partition(".")
        notifications.append({
            "level": "warning",
            "message": {"text": f"{table} was not measured: {_one_line(reason)}"},
            "locations": [_location(result.database, schema, name or schema)],
        })
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "dbguard", "version": __version__, "semanticVersion": __version__,
                                "informationUri": INFORMATION_URI, "rules": rules}},
            "automationDetails": {"id": f"dbguard/{result.database}/"},
            "invocations": [{"executionSuccessful": True, "endTimeUtc": result.generated_at,
                             "toolExecutionNotifications": notifications}],
            "results": results,
            "properties": {"database": result.database, "ignored": len(result.ignored),
                           "summary": result.summary()},
        }],
    }


# --------------------------------------------------------------------------- JUnit
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text) -> str:
    return _XML_BAD.sub("\ufffd", str(text))


def to_junit(result, *, fail_on: str = "critical") -> str:
    import xml.etree.ElementTree as ET

    threshold = Severity(fail_on).rank
    by_key: dict[tuple[str, str], list[Finding]] = {}
    for f in result.findings:
        by_key.setdefault((f.rule, f"{f.schema}.{f.table}"), []).append(f)
    ignored: dict[tuple[str, str], list[Finding]] = {}
    for f in result.ignored:
        ignored.setdefault((f.rule, f"{f.schema}.{f.table}"), []).append(f)

    root = ET.Element("testsuites", name="dbguard validate")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    rule_ids = sorted(set(result.rules_run) | {f.rule for f in result.findings})
    for rid in rule_ids:
        suite = ET.SubElement(root, "testsuite", name=_x(f"dbguard.{rid}"), timestamp=result.generated_at,
                              hostname=_x(result.database))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        extra = sorted({t for (r, t) in list(by_key) + list(ignored) if r == rid} - set(result.tables))
        for table in list(result.tables) + extra:
            case = ET.SubElement(suite, "testcase", classname=_x(f"dbguard.{rid}"), name=_x(table), time="0")
            counts["tests"] += 1
            found = by_key.get((rid, table), [])
            failing = [f for f in found if f.severity.rank >= threshold]
            if failing:
                worst = max(failing, key=lambda f: f.severity.rank)
                failure = ET.SubElement(case, "failure", type=worst.severity.value,
                                        message=_x(_one_line(worst.message)))
                failure.text = _x("\n\n".join(
                    f"[{f.severity.value}] {f.cache_key}\n{_one_line(f.message)}\nfix: {_one_line(f.remediation)}"
                    for f in failing))
                counts["failures"] += 1
            elif (rid, table) in ignored and not found:
                ET.SubElement(case, "skipped", message=_x("ignored by config: " + ", ".join(
                    f.cache_key for f in ignored[(rid, table)])))
                counts["skipped"] += 1
            if found and not failing:
                out = ET.SubElement(case, "system-out")
                out.text = _x("\n".join(f"[{f.severity.value}] {f.cache_key}: {_one_line(f.message)}" for f in found))
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", "0")
    if result.metrics_collected:
        suite = ET.SubElement(root, "testsuite", name="dbguard.data_metrics", timestamp=result.generated_at,
                              hostname=_x(result.database))
        problems = dict(result.not_measured)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for table in sorted(set(result.tables) | set(problems)):
            case = ET.SubElement(suite, "testcase", classname="dbguard.data_metrics", name=_x(table), time="0")
            counts["tests"] += 1
            if table in problems:
                ET.SubElement(case, "error", type="not_measured", message=_x(_one_line(problems[table])))
                counts["errors"] += 1
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", "0")
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
