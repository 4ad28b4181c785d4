"""The one JUnit XML writer (``validate --format junit``, ``test-isolation --format junit``).

Callers describe suites and cases as data; this module writes them, with every text made XML-safe
(:func:`dbguard_pipeline.text.xml_safe`) and the counts computed from the cases. :func:`audit_junit` is the
audit's report: one testsuite per rule, one testcase per rule x audited table; a failure for findings at or
above ``fail_on``; ignored findings are skipped; tables that could not be measured are errors of the
``data_metrics`` suite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional
from xml.etree import ElementTree as ET

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.text import one_line, xml_safe

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult


@dataclass(frozen=True)
class Outcome:
    """A failure, an error or a skip: ``kind`` is the element name."""

    kind: str  # "failure" | "error" | "skipped"
    message: str
    type: Optional[str] = None
    text: Optional[str] = None


@dataclass(frozen=True)
class Case:
    classname: str
    name: str
    time: str = "0"
    outcome: Optional[Outcome] = None
    system_out: Optional[str] = None


@dataclass(frozen=True)
class Suite:
    name: str
    cases: Sequence[Case] = ()
    time: str = "0"
    timestamp: Optional[str] = None
    hostname: Optional[str] = None
    extra: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        kinds = [c.outcome.kind for c in self.cases if c.outcome is not None]
        return {
            "tests": len(self.cases),
            "failures": kinds.count("failure"),
            "errors": kinds.count("error"),
            "skipped": kinds.count("skipped"),
        }


def _suite_element(parent: Optional[ET.Element], suite: Suite) -> ET.Element:
    attrs = {"name": xml_safe(suite.name)}
    if suite.timestamp:
        attrs["timestamp"] = suite.timestamp
    if suite.hostname is not None:
        attrs["hostname"] = xml_safe(suite.hostname)
    attrs.update({k: str(v) for k, v in suite.counts().items()})
    attrs["time"] = suite.time
    el = ET.Element("testsuite", attrs) if parent is None else ET.SubElement(parent, "testsuite", attrs)
    for case in suite.cases:
        tc = ET.SubElement(el, "testcase", classname=xml_safe(case.classname), name=xml_safe(case.name), time=case.time)
        if case.outcome is not None:
            o = case.outcome
            oattrs = {"message": xml_safe(o.message)}
            if o.type is not None:
                oattrs = {"type": o.type, **oattrs}
            child = ET.SubElement(tc, o.kind, oattrs)
            if o.text is not None:
                child.text = xml_safe(o.text)
        if case.system_out is not None:
            ET.SubElement(tc, "system-out").text = xml_safe(case.system_out)
    return el


def render_junit(suites: Iterable[Suite], *, name: Optional[str] = None) -> str:
    """One ``<testsuites name=...>`` document when ``name`` is given, else a single ``<testsuite>`` root."""
    suites = list(suites)
    if name is None:
        if len(suites) != 1:
            raise ValueError("a JUnit document without a <testsuites> root holds exactly one suite")
        root = _suite_element(None, suites[0])
    else:
        root = ET.Element("testsuites", name=xml_safe(name))
        totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for suite in suites:
            _suite_element(root, suite)
            for k, v in suite.counts().items():
                totals[k] += v
        for k, v in totals.items():
            root.set(k, str(v))
        root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- the audit's report
def _rule_case(rid: str, table: str, found: list[Finding], ignored: list[Finding], threshold: int) -> Case:
    classname = f"dbguard.{rid}"
    failing = [f for f in found if f.severity.rank >= threshold]
    if failing:
        worst = max(failing, key=lambda f: f.severity.rank)
        text = "\n\n".join(
            f"[{f.severity.value}] {f.cache_key}\n{one_line(f.message)}\nfix: {one_line(f.remediation)}"
            for f in failing
        )
        return Case(classname, table, outcome=Outcome("failure", one_line(worst.message), worst.severity.value, text))
    if found:
        return Case(
            classname,
            table,
            system_out="\n".join(f"[{f.severity.value}] {f.cache_key}: {one_line(f.message)}" for f in found),
        )
    if ignored:
        return Case(
            classname,
            table,
            outcome=Outcome("skipped", "ignored by config: " + ", ".join(f.cache_key for f in ignored)),
        )
    return Case(classname, table)


def audit_suites(result: AuditResult, *, fail_on: str = "critical") -> list[Suite]:
    threshold = Severity(fail_on).rank
    by_key: dict[tuple[str, str], list[Finding]] = {}
    for f in result.findings:
        by_key.setdefault((f.rule, f"{f.schema}.{f.table}"), []).append(f)
    ignored: dict[tuple[str, str], list[Finding]] = {}
    for f in result.ignored:
        ignored.setdefault((f.rule, f"{f.schema}.{f.table}"), []).append(f)
    suites = []
    for rid in sorted(set(result.rules_run) | {f.rule for f in result.findings}):
        extra = sorted({t for (r, t) in list(by_key) + list(ignored) if r == rid} - set(result.tables))
        cases = [
            _rule_case(rid, table, by_key.get((rid, table), []), ignored.get((rid, table), []), threshold)
            for table in list(result.tables) + extra
        ]
        suites.append(Suite(f"dbguard.{rid}", cases, timestamp=result.generated_at, hostname=result.database))
    if result.metrics_collected:
        problems = dict(result.not_measured)
        cases = [
            Case(
                "dbguard.data_metrics",
                table,
                outcome=Outcome("error", one_line(problems[table]), "not_measured") if table in problems else None,
            )
            for table in sorted(set(result.tables) | set(problems))
        ]
        suites.append(Suite("dbguard.data_metrics", cases, timestamp=result.generated_at, hostname=result.database))
    return suites


def audit_junit(result: AuditResult, *, fail_on: str = "critical") -> str:
    return render_junit(audit_suites(result, fail_on=fail_on), name="dbguard validate")
