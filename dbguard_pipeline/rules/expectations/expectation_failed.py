"""Expectations declared under `expectations:` in dbguard.yaml (any Great Expectations expectation, per table)
are validated against the database with SQL push-down; each one that fails is a finding with the severity the
config gives it (critical by default).

*What it checks.* A Great Expectations expectation declared under `expectations:` in `dbguard.yaml` failed.
The audit runs the suites through GX's SQL execution against the database (push-down; no table is loaded
into memory) and attaches the results to the metrics; one finding per failed expectation, with the
observed values in the detail and **the severity the config gives the expectation** (critical by default).
An expectation that could not be evaluated is listed as not measured.

*Why it matters.* Isolation is only part of data health: business rules (value ranges, allowed values,
uniqueness per tenant) belong in the same report and the same CI gate.

*How to fix.* Fix the data, or the expectation if the data is right, and run `dbguard validate` again.

```yaml
# dbguard.yaml
expectations:
  - table: public.vision_accuracy
    type: ExpectColumnValuesToBeBetween
    kwargs: {column: accuracy, min_value: 0, max_value: 1}
    severity: warning
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext

SPEC = RuleSpec("expectation_failed", Severity.CRITICAL, "expectations",
                "A Great Expectations expectation declared in the config failed", needs_metrics=True)


def _observed(obs: dict[str, Any]) -> str:
    parts = []
    if obs.get("unexpected_count") is not None:
        total = f" of {obs['element_count']:,}" if isinstance(obs.get("element_count"), int) else ""
        parts.append(f"{obs['unexpected_count']:,}{total} rows unexpected")
    if "observed_value" in obs:
        parts.append(f"observed {obs['observed_value']!r}")
    return "; ".join(parts)


def _kwargs(kwargs: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items()))
    return text if len(text) <= 200 else text[:197] + "..."


def check(ctx: RuleContext) -> Iterator[Finding]:
    for r in getattr(ctx.metrics, "expectations", None) or ():
        if r.success is not False:
            continue
        observed = _observed(r.observed)
        yield SPEC.finding(
            (r.schema_name, r.table_name),
            f"{r.type}({_kwargs(r.kwargs)}) failed" + (f": {observed}" if observed else ""),
            "Fix the data (or the expectation in dbguard.yaml if the data is right) and run dbguard validate again.",
            object=r.object, severity=Severity(r.severity),
            detail={"type": r.type, "kwargs": r.kwargs, "observed": r.observed})
