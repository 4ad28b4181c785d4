"""The audit run: snapshot -> data metrics (+ expectation suites) -> rules -> ignores -> AuditResult.

``run_audit`` is what ``dbguard validate`` and ``dbguard demo`` call (through ``services.audit``). The Dagster
assets compute their parts from the upstream ``schema_snapshot`` without redoing the rest: ``rls_audit`` =
:func:`static_audit`, ``tenant_coverage`` and ``data_integrity`` = :func:`data_audit` (one pass of data metrics).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.semantics.tenancy import audited_tables, has_tenant_column


@dataclass(frozen=True)
class CoverageRow:
    schema: str
    table: str
    rows: int
    with_tenant: int
    percent: float
    estimated: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "table": self.table,
            "rows": self.rows,
            "with_tenant": self.with_tenant,
            "percent": round(self.percent, 4),
            "estimated": self.estimated,
        }


@dataclass(frozen=True)
class AuditResult:
    database: str  # database name (never a DSN)
    generated_at: str  # ISO 8601 UTC
    snapshot: Snapshot
    findings: tuple[Finding, ...]  # after ignores, sorted (rules.sort_findings)
    ignored: tuple[Finding, ...]  # matched config.ignore: counted, not dropped silently
    coverage: tuple[CoverageRow, ...]
    not_measured: tuple[tuple[str, str], ...]  # ("schema.table", reason)
    rules_run: tuple[str, ...] = ()  # ids of the rules that ran
    metrics_collected: bool = True
    coverage_threshold: float = 100.0
    tables: tuple[str, ...] = ()  # "schema.table" of the audited tables
    metrics: Optional[Mapping[str, Any]] = field(default=None, compare=False, repr=False)  # TableMetrics

    def summary(self) -> dict:
        out = {s.value: 0 for s in Severity}
        for f in self.findings:
            out[f.severity.value] += 1
        out["ignored"] = len(self.ignored)
        return out

    def at_or_above(self, level: str | Severity) -> list[Finding]:
        rank = Severity(level).rank
        return [f for f in self.findings if f.severity.rank >= rank]

    def exit_code(self, fail_on: str | Severity = Severity.CRITICAL) -> int:
        """0 when nothing at or above ``fail_on``; 1 otherwise. A table that could not be measured counts as a
        warning: ``--fail-on warning`` fails on it, ``--fail-on critical`` reports it without failing."""
        if self.at_or_above(fail_on):
            return 1
        if self.not_measured and Severity(fail_on).rank <= Severity.WARNING.rank:
            return 1
        return 0

    def to_json_dict(self) -> dict:
        s = self.summary()
        return {
            "database": self.database,
            "generated_at": self.generated_at,
            "summary": {
                "critical": s["critical"],
                "warning": s["warning"],
                "info": s["info"],
                "ignored": s["ignored"],
                "not_measured": len(self.not_measured),
            },
            "findings": [f.to_dict(detail=False) for f in self.findings],
            "coverage": [c.to_dict() for c in self.coverage],
            "ignored": [f.to_dict(detail=False) for f in self.ignored],
            "not_measured": [{"table": t, "reason": r} for t, r in self.not_measured],
            "server_version": self.snapshot.server_version,
            "tables": list(self.tables),
            "rules": list(self.rules_run),
        }


# --------------------------------------------------------------------------- pieces (also for Dagster)
def coverage_rows(snapshot: Snapshot, metrics: Optional[Mapping[str, Any]], config: Config) -> tuple[CoverageRow, ...]:
    """Tenant data coverage of every measured table that has the tenant column, in snapshot order."""
    if not metrics:
        return ()
    out = []
    for t in audited_tables(snapshot, config):
        m = metrics.get(t.qualified)
        if m is None or not has_tenant_column(t, config) or m.rows is None or m.tenant_nulls is None:
            continue
        with_tenant = m.rows - m.tenant_nulls
        pct = 100.0 if m.rows == 0 else 100.0 * with_tenant / m.rows
        out.append(CoverageRow(t.schema, t.name, m.rows, with_tenant, pct, m.estimated))
    return tuple(out)


def split_ignored(findings: Iterable[Finding], config: Config) -> tuple[list[Finding], list[Finding]]:
    """(kept, ignored). An ignore entry is a cache key (``rule:schema.table[:object]``); entries with ``*``
    are glob patterns (``weak_rls_policy:public.*``)."""
    exact = set(config.ignore)
    patterns = [p for p in config.ignore if "*" in p]
    kept, ignored = [], []
    for f in findings:
        key = f.cache_key
        if key in exact or any(fnmatch.fnmatchcase(key, p) for p in patterns):
            ignored.append(f)
        else:
            kept.append(f)
    return kept, ignored


def check_rule_ids(config: Config) -> None:
    """The rule ids the config names (``severity:``, ``exclude_rules:``) exist: a one-line ConfigError if not."""
    from dbguard_pipeline import rules as rules_pkg
    from dbguard_pipeline.errors import ConfigError

    known = set(rules_pkg.REGISTRY)
    for key, ids in (("severity", config.severity), ("exclude_rules", config.exclude_rules)):
        unknown = sorted(set(ids) - known)
        if unknown:
            raise ConfigError(f"config {key}: unknown rule id: {', '.join(unknown)} (dbguard rules lists them)")


def selected_rules(only: Optional[Iterable[str]] = None, config: Optional[Config] = None) -> dict:
    """The registry, restricted to ``only`` (unknown ids raise a one-line DbguardError) and without the rules
    the config excludes (``exclude_rules``; its rule ids are checked too)."""
    from dbguard_pipeline import rules as rules_pkg
    from dbguard_pipeline.errors import DbguardError

    registry = rules_pkg.all_rules()
    if config is not None:
        check_rule_ids(config)
        registry = {k: v for k, v in registry.items() if k not in set(config.exclude_rules)}
    if not only:
        return registry
    only = list(only)
    unknown = sorted(set(only) - set(rules_pkg.REGISTRY))
    if unknown:
        raise DbguardError(f"unknown rule id: {', '.join(unknown)} (known: {', '.join(sorted(rules_pkg.REGISTRY))})")
    return {k: v for k, v in registry.items() if k in set(only)}


def with_severity(findings: Iterable[Finding], config: Config) -> list[Finding]:
    """The findings with the config's per-rule severity overrides applied (``severity: {rule: level}``)."""
    if not config.severity:
        return list(findings)
    out = []
    for f in findings:
        level = config.severity.get(f.rule)
        out.append(replace(f, severity=Severity(level)) if level and level != f.severity.value else f)
    return out


def collect_data(dsn: str, snapshot: Snapshot, config: Config, *, expectations: bool = True):
    """Data metrics of the audited tables, with the configured expectation suites attached
    (``metrics.expectations``) when ``expectations`` and the config declares any."""
    from dbguard_pipeline.pg.metrics import collect_metrics

    metrics = collect_metrics(dsn, snapshot, config)
    if expectations and config.expectations:
        from dbguard_pipeline.pg.expectations import run_expectations

        metrics.expectations = run_expectations(dsn, config, snapshot)
    return metrics


def static_findings(
    snapshot: Snapshot,
    config: Config,
    metrics: Optional[Mapping[str, Any]] = None,
    only: Optional[Iterable[str]] = None,
) -> list[Finding]:
    """Findings of the rules that read the snapshot only (the ``rls_audit`` asset). ``metrics``, when given,
    lets size-dependent static rules use measured row counts instead of estimates. The config's excluded rules do
    not run; its severity overrides apply."""
    from dbguard_pipeline import rules as rules_pkg

    ids = [k for k, v in selected_rules(only, config).items() if not v.needs_metrics]
    found = rules_pkg.run_rules(snapshot, metrics, config, only=ids) if ids else []
    return rules_pkg.sort_findings(with_severity(found, config))


def data_findings(
    snapshot: Snapshot, metrics: Mapping[str, Any], config: Config, only: Optional[Iterable[str]] = None
) -> list[Finding]:
    """Findings of the data rules (the ``data_integrity`` asset), from measured metrics, with the config's
    exclusions and severity overrides."""
    from dbguard_pipeline import rules as rules_pkg

    ids = [k for k, v in selected_rules(only, config).items() if v.needs_metrics]
    found = rules_pkg.run_rules(snapshot, metrics, config, only=ids) if ids else []
    return rules_pkg.sort_findings(with_severity(found, config))


def build_result(
    snapshot: Snapshot,
    findings: Iterable[Finding],
    config: Config,
    metrics: Optional[Mapping[str, Any]] = None,
    rules_run: Sequence[str] = (),
) -> AuditResult:
    """Drop the findings of excluded rules, apply the severity overrides and the ignores, sort, and assemble an
    AuditResult (for callers that ran the rules themselves). Every report reads the findings from here."""
    from dbguard_pipeline.rules import sort_findings

    excluded = set(config.exclude_rules)
    unique: dict[str, Finding] = {}
    for f in with_severity(findings, config):
        if f.rule not in excluded:
            unique.setdefault(f.cache_key, f)
    kept, ignored = split_ignored(unique.values(), config)
    not_measured = tuple(metrics.not_measured()) if metrics is not None and hasattr(metrics, "not_measured") else ()
    return AuditResult(
        database=snapshot.database,
        generated_at=datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        snapshot=snapshot,
        findings=tuple(sort_findings(kept)),
        ignored=tuple(sort_findings(ignored)),
        coverage=coverage_rows(snapshot, metrics, config),
        not_measured=not_measured,
        rules_run=tuple(sorted(r for r in rules_run if r not in excluded)),
        metrics_collected=metrics is not None,
        coverage_threshold=config.coverage_threshold,
        tables=tuple(t.qualified for t in audited_tables(snapshot, config)),
        metrics=metrics,
    )


def static_audit(snapshot: Snapshot, config: Config) -> AuditResult:
    """The static findings of a snapshot taken before, ignores applied (the ``rls_audit`` asset)."""
    return build_result(snapshot, static_findings(snapshot, config), config)


def data_audit(dsn: str, snapshot: Snapshot, config: Config) -> AuditResult:
    """One pass of data metrics (each table read once) for both ``tenant_coverage`` and ``data_integrity``: an
    AuditResult holding the data findings only, the coverage rows and the tables not measured."""
    metrics = collect_data(dsn, snapshot, config)
    return build_result(snapshot, data_findings(snapshot, metrics, config), config, metrics)


# --------------------------------------------------------------------------- the audit
def run_audit(
    dsn: str,
    config: Config,
    *,
    rules: Optional[Iterable[str]] = None,
    with_metrics: bool = True,
    snapshot: Optional[Snapshot] = None,
) -> AuditResult:
    """Audit a database: introspect (unless ``snapshot`` is given), measure the data (unless
    ``with_metrics`` is False or only static rules are selected), run the rules, apply the ignores.
    Read-only throughout."""
    from dbguard_pipeline import rules as rules_pkg
    from dbguard_pipeline.pg.catalog import introspect

    selected = selected_rules(rules, config)
    if snapshot is None:
        snapshot = introspect(
            dsn,
            config.schemas or None,
            statement_timeout_ms=config.statement_timeout_ms,
            lock_timeout_ms=config.lock_timeout_ms,
        )
    need_data = with_metrics and (rules is None or any(v.needs_metrics for v in selected.values()))
    metrics = None
    if need_data:
        want_gx = "expectation_failed" in selected
        metrics = collect_data(dsn, snapshot, config, expectations=want_gx)
    findings = rules_pkg.run_rules(snapshot, metrics, config, only=list(selected)) if selected else []
    ran = [k for k, v in selected.items() if metrics is not None or not v.needs_metrics]
    return build_result(snapshot, findings, config, metrics, ran)
