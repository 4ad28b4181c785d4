"""The rule registry. A rule is a small pure function ``(snapshot, metrics, config) -> Iterable[Finding]``
registered with a stable id (a public contract: ids go into users' ignore lists; never rename one), a
severity, a category, a one-line title and a description. docs/rules.md has one entry per rule.

Rule modules register themselves on import; :func:`all_rules` imports them all.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Snapshot, Table

RULE_MODULES = ("rls", "tenancy", "integrity", "performance", "security", "expectations")

RuleFunc = Callable[[Snapshot, Optional[Mapping[str, Any]], Config], Iterable[Finding]]


@dataclass(frozen=True)
class RuleSpec:
    id: str
    severity: Severity
    category: str
    title: str
    description: str
    func: RuleFunc
    needs_metrics: bool = False
    fix_action: Optional[str] = None  # the generate-migration action that fixes a finding of this rule
    tags: frozenset[str] = frozenset()  # e.g. "weakens-policy": a new finding on a policy weakens isolation

    def finding(self, table: Table | tuple[str, str], message: str, remediation: str, *, object: Optional[str] = None,
                severity: Optional[Severity] = None, detail: Optional[dict] = None) -> Finding:
        schema, name = (table.schema, table.name) if isinstance(table, Table) else table
        return Finding(rule=self.id, severity=severity or self.severity, category=self.category, schema=schema,
                       table=name, message=message, remediation=remediation, object=object, detail=detail or {})


REGISTRY: dict[str, RuleSpec] = {}


def rule(id: str, severity: Severity | str, category: str, title: str, description: str = "",
         needs_metrics: bool = False, fix_action: Optional[str] = None,
         tags: Iterable[str] = ()) -> Callable[[RuleFunc], RuleFunc]:
    """Register a rule. The decorated function receives (snapshot, metrics, config) and the spec as
    ``spec`` keyword so it can build findings with ``spec.finding(...)``."""

    def deco(func):
        if id in REGISTRY and REGISTRY[id].func is not func:
            raise ValueError(f"duplicate rule id {id}")
        REGISTRY[id] = RuleSpec(id=id, severity=Severity(severity), category=category, title=title,
                                description=description or (func.__doc__ or "").strip(), func=func,
                                needs_metrics=needs_metrics, fix_action=fix_action, tags=frozenset(tags))
        return func

    return deco


def all_rules() -> dict[str, RuleSpec]:
    for name in RULE_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return dict(REGISTRY)


def fix_actions() -> dict[str, str]:
    """Rule id -> the action that fixes its findings, for every fixable rule."""
    return {k: v.fix_action for k, v in all_rules().items() if v.fix_action}


def rules_tagged(tag: str) -> frozenset[str]:
    return frozenset(k for k, v in all_rules().items() if tag in v.tags)


_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_ORDER[f.severity], f.category, f.schema, f.table, f.rule, f.object or ""))


def run_rules(snapshot: Snapshot, metrics: Optional[Mapping[str, Any]], config: Config,
              only: Optional[Iterable[str]] = None) -> list[Finding]:
    """Run every registered rule (or only the given ids) and return the findings, sorted, de-duplicated."""
    rules = all_rules()
    if only:
        unknown = sorted(set(only) - set(rules))
        if unknown:
            from dbguard_pipeline.errors import DbguardError

            raise DbguardError(f"unknown rule id: {', '.join(unknown)} (see docs/rules.md)")
        rules = {k: v for k, v in rules.items() if k in set(only)}
    seen: dict[str, Finding] = {}
    for spec in rules.values():
        if spec.needs_metrics and metrics is None:
            continue
        for f in spec.func(snapshot, metrics, config, spec=spec):
            seen.setdefault(f.cache_key, f)
    return sort_findings(seen.values())
