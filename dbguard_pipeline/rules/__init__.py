"""The rule registry. A rule is one module in a category subpackage (``rules/rls/weak_rls_policy.py``; the file
name is the rule id) holding

- ``SPEC = RuleSpec(id, severity, category, title, fix_action=..., tags=..., needs_metrics=...)``: the rule's
  contract. Ids go into users' ignore lists and cache keys: never rename one;
- ``check(ctx: RuleContext) -> Iterable[Finding]``: the rule itself, a pure function of the per-audit context
  (:mod:`dbguard_pipeline.rules.context`), building its findings with ``SPEC.finding(...)``;
- a module docstring: the rule's documentation. Its first paragraph is the description (SARIF's
  ``fullDescription``); the whole of it is the rule's section of docs/rules.md
  (``python -m dbguard_pipeline.rules.docs > docs/rules.md``).

The registry discovers the rule modules (every public module of every subpackage): adding a rule is one rule
file plus one case file (dbguard_tests/rules/cases/<rule_id>.yaml); dbguard_tests/test_rules_complete.py fails
when either, the documentation or a claimed fix action is missing.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Table

if TYPE_CHECKING:
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.model.schema import Snapshot
    from dbguard_pipeline.rules.context import RuleContext

# The order of the categories in reports and docs/rules.md; a subpackage not listed here comes after them.
CATEGORIES = ("rls", "tenancy", "integrity", "performance", "security", "expectations")

RuleFunc = Callable[["RuleContext"], Iterable[Finding]]


@dataclass(frozen=True)
class RuleSpec:
    """What a rule promises: its id, default severity, category, one-line title, the ``generate-migration``
    action that fixes its findings (if any), tags (e.g. ``weakens-policy``: a new finding on a policy weakens
    isolation, for ``dbguard diff``) and whether it reads the data metrics. The registry adds the check
    function, the module docstring and the module name."""

    id: str
    severity: Severity
    category: str
    title: str
    fix_action: Optional[str] = None
    tags: frozenset[str] = frozenset()
    needs_metrics: bool = False
    func: Optional[RuleFunc] = field(default=None, compare=False, repr=False)
    doc: str = field(default="", compare=False, repr=False)
    module: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))
        object.__setattr__(self, "tags", frozenset(self.tags))

    @property
    def description(self) -> str:
        """The first paragraph of the docstring, on one line."""
        return " ".join(self.doc.split("\n\n", 1)[0].split())

    def finding(self, table: Table | tuple[str, str], message: str, remediation: str, *,
                object: Optional[str] = None, severity: Optional[Severity] = None,
                detail: Optional[dict[str, Any]] = None) -> Finding:
        schema, name = (table.schema, table.name) if isinstance(table, Table) else table
        return Finding(rule=self.id, severity=severity or self.severity, category=self.category, schema=schema,
                       table=name, message=message, remediation=remediation, object=object, detail=detail or {})


def category_order(name: str) -> tuple[int, str]:
    return (CATEGORIES.index(name) if name in CATEGORIES else len(CATEGORIES), name)


def _rule_modules() -> Iterator[ModuleType]:
    """Every rule module: the public modules of the public subpackages, by category, then by name."""
    packages = sorted((m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_")),
                      key=category_order)
    for category in packages:
        package = importlib.import_module(f"{__name__}.{category}")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.ispkg and not info.name.startswith("_"):
                yield importlib.import_module(f"{package.__name__}.{info.name}")


def _bind(module: ModuleType) -> RuleSpec:
    """The module's SPEC with its check function and docstring, after checking the module is a rule unit."""
    spec = getattr(module, "SPEC", None)
    check = getattr(module, "check", None)
    where = module.__name__
    if not isinstance(spec, RuleSpec) or not callable(check):
        raise TypeError(f"{where}: a rule module defines SPEC = RuleSpec(...) and check(ctx)")
    category, name = where.split(".")[-2:]
    if (spec.id, spec.category) != (name, category):
        raise ValueError(f"{where}: the file name is the rule id and the folder its category "
                         f"(SPEC says {spec.category}/{spec.id})")
    return replace(spec, func=check, doc=inspect.cleandoc(module.__doc__ or ""), module=where)


class _Registry(Mapping[str, RuleSpec]):
    """Rule id -> spec, discovered on first use."""

    def __init__(self) -> None:
        self._specs: Optional[dict[str, RuleSpec]] = None

    def _load(self) -> dict[str, RuleSpec]:
        if self._specs is None:
            specs: dict[str, RuleSpec] = {}
            for module in _rule_modules():
                spec = _bind(module)
                if spec.id in specs:
                    raise ValueError(f"duplicate rule id {spec.id}")
                specs[spec.id] = spec
            self._specs = specs
        return self._specs

    def __getitem__(self, key: str) -> RuleSpec:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


REGISTRY: Mapping[str, RuleSpec] = _Registry()


def all_rules() -> dict[str, RuleSpec]:
    return dict(REGISTRY)


def fix_actions() -> dict[str, str]:
    """Rule id -> the action that fixes its findings, for every fixable rule."""
    return {k: v.fix_action for k, v in REGISTRY.items() if v.fix_action}


def rules_tagged(tag: str) -> frozenset[str]:
    return frozenset(k for k, v in REGISTRY.items() if tag in v.tags)


_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_ORDER[f.severity], f.category, f.schema, f.table, f.rule, f.object or ""))


def run_rules(snapshot: Snapshot, metrics: Optional[Mapping[str, Any]], config: Config,
              only: Optional[Iterable[str]] = None) -> list[Finding]:
    """Run every registered rule (or only the given ids) over one shared context and return the findings,
    sorted, de-duplicated."""
    from dbguard_pipeline.rules.context import RuleContext

    rules = all_rules()
    if only:
        wanted = set(only)
        unknown = sorted(wanted - set(rules))
        if unknown:
            from dbguard_pipeline.errors import DbguardError

            raise DbguardError(f"unknown rule id: {', '.join(unknown)} (see docs/rules.md)")
        rules = {k: v for k, v in rules.items() if k in wanted}
    ctx = RuleContext(snapshot, metrics, config)
    seen: dict[str, Finding] = {}
    for spec in rules.values():
        if spec.func is None or (spec.needs_metrics and metrics is None):
            continue
        for f in spec.func(ctx):
            seen.setdefault(f.cache_key, f)
    return sort_findings(seen.values())
