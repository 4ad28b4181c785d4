"""Data rules: they read the measured metrics (:mod:`dbguard_pipeline.pg.metrics`), never the database.

A table or reference that could not be measured produces no finding here: it is listed as *not measured*
in the audit result (``AuditResult.not_measured``) and in every report format, never counted as clean.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.rules import RuleSpec, rule


def _metrics(metrics: Optional[Mapping[str, Any]]) -> Iterable:
    return [] if not metrics else [m for m in metrics.values() if hasattr(m, "orphans")]


def _about(m, n: int) -> str:
    return f"about {n:,}" if m.estimated else f"{n:,}"


def _sampled(m) -> str:
    return f" (estimated from a {m.sample_percent:g}% sample)" if m.estimated else ""


def _table_arg(m) -> str:
    return m.table if m.schema == "public" else f"{m.schema}.{m.table}"


@rule("tenant_coverage", Severity.CRITICAL, "integrity",
      "Rows without a tenant",
      "Rows whose tenant column is NULL belong to no tenant: tenant policies hide them from everyone (or show "
      "them to everyone, depending on how the policy treats NULL) and they escape per-tenant exports and "
      "deletions. Coverage is the share of rows with a tenant; it must reach config.coverage_threshold "
      "(default 100%).",
      needs_metrics=True)
def tenant_coverage(snapshot: Snapshot, metrics, config: Config, *, spec: RuleSpec) -> Iterable[Finding]:
    for m in _metrics(metrics):
        if m.tenant_column is None or m.rows is None or m.tenant_nulls is None or m.rows == 0:
            continue
        pct = m.coverage_percent
        if m.tenant_nulls == 0 or pct >= config.coverage_threshold:
            continue
        col = m.tenant_column
        yield spec.finding(
            (m.schema, m.table),
            f"{_about(m, m.tenant_nulls)} of {m.rows:,} rows have no {col}: tenant coverage {pct:.1f}%, below "
            f"the {config.coverage_threshold:g}% threshold{_sampled(m)}",
            f"Assign the rows their tenant (backfill {col} from the parent row they belong to, or delete them), "
            f"then forbid NULLs: ALTER TABLE ... ADD CHECK ({col} IS NOT NULL) NOT VALID, VALIDATE it, and "
            f"SET NOT NULL.",
            object=col,
            detail={"rows": m.rows, "without_tenant": m.tenant_nulls, "percent": round(pct, 4),
                    "threshold": config.coverage_threshold, "estimated": m.estimated})


@rule("orphaned_rows", Severity.CRITICAL, "integrity",
      "Rows whose parent does not exist",
      "A reference that no foreign key enforces (a NOT VALID foreign key, a tenant column without a foreign "
      "key, a <name>_id column without one) lets rows point at parents that do not exist: joins drop them, "
      "tenant paths through them break, and the foreign key can never be validated until they are fixed.",
      needs_metrics=True)
def orphaned_rows(snapshot: Snapshot, metrics, config: Config, *, spec: RuleSpec) -> Iterable[Finding]:
    for m in _metrics(metrics):
        for name, count in sorted(m.orphans.items()):
            if not count:
                continue
            ref = m.reference(name)
            cols = ", ".join(ref.columns) if ref else name
            target = ref.target if ref else "its parent"
            if ref is not None and ref.kind == "foreign_key_not_valid":
                fix = (f"Delete or re-parent the orphaned rows, then validate the constraint: ALTER TABLE ... "
                       f"VALIDATE CONSTRAINT {name};")
                why = f"the foreign key {name} is NOT VALID"
            else:
                fix = (f"Delete or re-parent the orphaned rows, then add the missing foreign key: "
                       f"dbguard generate-migration add-foreign-key {_table_arg(m)} "
                       f"{ref.ref_table if ref else ''}".rstrip())
                why = "no foreign key enforces it"
            yield spec.finding(
                (m.schema, m.table),
                f"{_about(m, count)} rows reference a missing row: ({cols}) -> {target}, {why}{_sampled(m)}",
                fix, object=name,
                detail={"orphans": count, "columns": list(ref.columns) if ref else [name],
                        "references": target, "kind": ref.kind if ref else None, "estimated": m.estimated})


@rule("cross_tenant_reference", Severity.CRITICAL, "integrity",
      "Rows that reference another tenant's rows",
      "When a child row and the parent row it references carry different tenants, one tenant's data points "
      "into another's: joins leak across tenants and deleting a tenant leaves dangling or shared rows. A "
      "composite foreign key (tenant column, key) -> parent (tenant column, key) makes this impossible.",
      needs_metrics=True)
def cross_tenant_reference(snapshot: Snapshot, metrics, config: Config, *, spec: RuleSpec) -> Iterable[Finding]:
    for m in _metrics(metrics):
        for name, count in sorted(m.cross_tenant.items()):
            if not count:
                continue
            ref = m.reference(name)
            cols = ", ".join(ref.columns) if ref else name
            target = ref.target if ref else "its parent"
            tcol = (ref.tenant_column if ref else None) or config.tenant.column
            yield spec.finding(
                (m.schema, m.table),
                f"{_about(m, count)} rows reference a row of another tenant through ({cols}) -> {target}: "
                f"their {tcol} differs from the parent's{_sampled(m)}",
                f"Correct the rows' {tcol} (or their parent), then enforce it with a composite foreign key "
                f"({tcol}, {cols}) -> {ref.ref_table if ref else 'parent'}({tcol}, "
                f"{', '.join(ref.ref_columns) if ref else 'id'}) backed by a unique index on the parent.",
                object=name,
                detail={"rows": count, "columns": list(ref.columns) if ref else [name], "references": target,
                        "estimated": m.estimated})


@rule("null_violation", Severity.CRITICAL, "integrity",
      "NULLs in a column the config marks required",
      "Columns listed under required_columns in dbguard.yaml must hold a value in every row; the database "
      "does not enforce it (no NOT NULL), so the data must be checked.",
      needs_metrics=True)
def null_violation(snapshot: Snapshot, metrics, config: Config, *, spec: RuleSpec) -> Iterable[Finding]:
    for m in _metrics(metrics):
        for col, count in sorted(m.null_counts.items()):
            if not count:
                continue
            total = f" of {m.rows:,}" if m.rows is not None else ""
            yield spec.finding(
                (m.schema, m.table),
                f"{_about(m, count)}{total} rows have NULL in required column {col}{_sampled(m)}",
                f"Fill the NULLs in {col}, then enforce it: ALTER TABLE ... ADD CHECK ({col} IS NOT NULL) "
                f"NOT VALID; VALIDATE CONSTRAINT; ALTER COLUMN {col} SET NOT NULL.",
                object=col, detail={"nulls": count, "rows": m.rows, "estimated": m.estimated})
