"""expectation_failed: the Great Expectations suites declared in dbguard.yaml.

The audit runs the suites (:func:`dbguard_pipeline.pg.expectations.run_expectations`) and attaches the results
to the metrics (``metrics.expectations``); this rule turns each failed expectation into a finding with the
severity the config gives it. An expectation that could not be evaluated is listed as not measured.
"""
from __future__ import annotations

from typing import Iterable

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.rules import RuleSpec, rule


def _observed(obs: dict) -> str:
    parts = []
    if obs.get("unexpected_count") is not None:
        total = f" of {obs['element_count']:,}" if isinstance(obs.get("element_count"), int) else ""
        parts.append(f"{obs['unexpected_count']:,}{total} rows unexpected")
    if "observed_value" in obs:
        parts.append(f"observed {obs['observed_value']!r}")
    return "; ".join(parts)


def _kwargs(kwargs: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items()))
    return text if len(text) <= 200 else text[:197] + "..."


@rule("expectation_failed", Severity.CRITICAL, "expectations",
      "A Great Expectations expectation declared in the config failed",
      "Expectations declared under `expectations:` in dbguard.yaml (any Great Expectations expectation, per "
      "table) are validated against the database with SQL push-down; each one that fails is a finding with "
      "the severity the config gives it (critical by default).",
      needs_metrics=True)
def expectation_failed(snapshot: Snapshot, metrics, config: Config, *, spec: RuleSpec) -> Iterable[Finding]:
    for r in getattr(metrics, "expectations", None) or ():
        if r.success is not False:
            continue
        observed = _observed(r.observed)
        yield spec.finding(
            (r.schema_name, r.table_name),
            f"{r.type}({_kwargs(r.kwargs)}) failed" + (f": {observed}" if observed else ""),
            "Fix the data (or the expectation in dbguard.yaml if the data is right) and run dbguard validate "
            "again.",
            object=r.object, severity=Severity(r.severity),
            detail={"type": r.type, "kwargs": r.kwargs, "observed": r.observed})
