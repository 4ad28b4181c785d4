"""What each audit asset computes, shared by the assets (one database or a fleet partition) and the fleet
job's ops: the value, the metadata people read in the UI, and the outcome of every asset check.

The work itself is the core's, through the service layer (``services.introspect``, ``static_audit``,
``data_audit``); this module only turns results into Dagster metadata and check outcomes, including the
regression checks that compare a run with the previous materialization of the same asset (and partition).
What a regression check needs from the previous run travels in that run's metadata (``finding_keys``, ``rls_state``,
``coverage_by_table``), so it works with any instance storage (SQLite, PostgreSQL) and any IO manager.

Longer than 500 lines on purpose: the assets' checks and their metadata tables are presentation only, kept
beside each other so that every check reads its metadata the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import dagster as dg

from dbguard_pipeline.defs.resources import Target
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.semantics.weakening import Judged, TableFacts

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN
MAX_TABLE_ROWS = 1000  # rows of a metadata table; the counts next to it are always complete
MAX_LISTED = 50


# --------------------------------------------------------------------------- check specs
@dataclass(frozen=True)
class CheckDef:
    name: str
    description: str
    blocking: bool  # an ERROR result stops the run (and triggers the alert sensor)


RLS_AUDIT_CHECKS = (
    CheckDef("no_critical_findings", "ERROR: the schema has critical RLS, tenancy or security findings.", True),
    CheckDef("no_warning_findings", "WARN: the schema has warnings (weak policies, missing indexes, ...).", False),
    CheckDef(
        "no_new_findings",
        "Regression: findings that were not there at the previous materialization "
        "(by cache key). ERROR when a new one is critical, else WARN.",
        True,
    ),
    CheckDef(
        "no_policy_weakened",
        "Regression, ERROR: a RESTRICTIVE policy removed, made permissive or applying to "
        "fewer roles or commands; a permissive policy applying to more roles or commands, or whose USING or WITH "
        "CHECK no longer pins the tenant; a policy added or changed into a flagged form; RLS disabled or no "
        "longer forced on a table (the judgment of dbguard diff).",
        True,
    ),
    CheckDef(
        "no_new_table_without_rls",
        "Regression, ERROR: a table that did not exist at the previous materialization and has RLS off.",
        True,
    ),
)
COVERAGE_CHECKS = (
    CheckDef(
        "coverage_above_threshold",
        "ERROR: a tenant table has rows without a tenant beyond the configured "
        "coverage threshold; WARN when tables could not be measured.",
        True,
    ),
    CheckDef(
        "coverage_not_dropped",
        "Regression, WARN: a table's tenant coverage is lower than at the previous materialization.",
        False,
    ),
)
INTEGRITY_CHECKS = (
    CheckDef(
        "no_critical_findings",
        "ERROR: orphaned rows, cross-tenant references, NULLs in required columns or failed critical expectations.",
        True,
    ),
    CheckDef("no_warning_findings", "WARN: data warnings.", False),
    CheckDef(
        "no_new_findings",
        "Regression: data findings that were not there at the previous materialization. "
        "ERROR when a new one is critical, else WARN.",
        True,
    ),
)


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: dg.AssetCheckSeverity
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # one line whatever the identifiers in it (a table name may hold a newline)
        object.__setattr__(self, "description", self.description.replace("\r", "\\r").replace("\n", "\\n"))

    def result(self, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=self.name,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=dict(self.metadata),
        )

    def evaluation(self, asset_key: dg.AssetKey, partition: Optional[str], blocking: bool) -> dg.AssetCheckEvaluation:
        return dg.AssetCheckEvaluation(
            asset_key=asset_key,
            check_name=self.name,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=dict(self.metadata),
            blocking=blocking,
            partition=partition,
        )


@dataclass(frozen=True)
class StepOutput:
    value: Any
    metadata: Mapping[str, Any]
    checks: tuple[CheckOutcome, ...] = ()


@dataclass(frozen=True)
class Previous:
    """The previous materialization of an asset (partition): its metadata values and run."""

    metadata: Mapping[str, Any]
    run_id: str

    @classmethod
    def fetch(
        cls, instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: Optional[str] = None
    ) -> Optional[Previous]:
        flt = dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None)
        records = instance.fetch_materializations(flt, limit=1).records
        if not records:
            return None
        mat = records[0].asset_materialization
        if mat is None:
            return None
        return cls(metadata={k: v.value for k, v in mat.metadata.items()}, run_id=records[0].run_id)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


# --------------------------------------------------------------------------- helpers
TableRow = dict[str, "str | int | float | bool | None"]


def table_value(rows: Sequence[TableRow], columns: Sequence[tuple[str, str, str]]) -> dg.TableMetadataValue:
    """A table the UI renders as a sortable table (not clipped markdown); at most MAX_TABLE_ROWS rows.
    ``columns``: (name, type, description)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in columns])
    return dg.MetadataValue.table(records=[dg.TableRecord(r) for r in rows[:MAX_TABLE_ROWS]], schema=schema)


FINDING_COLUMNS = (
    ("severity", "string", "critical, warning or info"),
    ("rule", "string", "the rule id (dbguard rules)"),
    ("table", "string", "schema.table"),
    ("object", "string", "the policy, column, view or function concerned, if any"),
    ("message", "string", "what is wrong"),
    ("cache_key", "string", "what ignore: in dbguard.yaml and the regression checks match on"),
)
SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def findings_table(findings: Sequence[Finding]) -> dg.TableMetadataValue:
    """Findings as a table (severity, rule, table, object, message, cache_key), most severe first."""
    ordered = sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 3), f.rule, f.schema, f.table))
    rows: list[TableRow] = [
        {
            "severity": f.severity.value,
            "rule": f.rule,
            "table": f"{f.schema}.{f.table}",
            "object": f.object or "",
            "message": " ".join(str(f.message).split()),
            "cache_key": f.cache_key,
        }
        for f in ordered
    ]
    return table_value(rows, FINDING_COLUMNS)


def count(findings: Iterable[Finding]) -> dict[str, int]:
    out = {"critical": 0, "warning": 0, "info": 0}
    for f in findings:
        out[f.severity.value] += 1
    return out


def _listing(items: Sequence[str]) -> str:
    head = ", ".join(items[:5])
    return head + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _capped(items: Sequence[Any]) -> list[Any]:
    return list(items[:MAX_LISTED]) + ([f"... and {len(items) - MAX_LISTED} more"] if len(items) > MAX_LISTED else [])


# --------------------------------------------------------------------------- schema_snapshot
def take_snapshot(target: Target) -> Snapshot:
    from dbguard_pipeline import services

    return services.introspect(target.dsn, target.config, list(target.config.schemas) or None)


SNAPSHOT_COLUMNS = (
    ("table", "string", "schema.table"),
    ("rls", "bool", "row level security enabled"),
    ("forced", "bool", "RLS forced for the table owner"),
    ("policies", "int", "policies on the table"),
    ("rows_estimated", "int", "rows, from the planner's statistics"),
)


def snapshot_table(snapshot: Snapshot) -> dg.TableMetadataValue:
    rows: list[TableRow] = [
        {
            "table": t.qualified,
            "rls": bool(t.rls_enabled),
            "forced": bool(t.rls_forced),
            "policies": len(t.policies),
            "rows_estimated": max(t.row_estimate, 0),
        }
        for t in snapshot.tables
    ]
    return table_value(rows, SNAPSHOT_COLUMNS)


def snapshot_step(target: Target) -> StepOutput:
    snapshot = take_snapshot(target)
    s = snapshot.summary()
    metadata = {
        "database": dg.MetadataValue.text(target.name),
        "server_version": dg.MetadataValue.text(snapshot.server_version),
        "tables": dg.MetadataValue.int(s["tables"]),
        "policies": dg.MetadataValue.int(s["policies"]),
        "tables_without_rls": dg.MetadataValue.int(s["tables_without_rls"]),
        "views": dg.MetadataValue.int(s["views"]),
        "functions": dg.MetadataValue.int(s["functions"]),
        "tables_overview": snapshot_table(snapshot),
    }
    return StepOutput(snapshot, metadata)


# --------------------------------------------------------------------------- rls_audit
def _severity_checks(findings: Sequence[Finding], what: str) -> list[CheckOutcome]:
    crit = [f for f in findings if f.severity is Severity.CRITICAL]
    warn = [f for f in findings if f.severity is Severity.WARNING]
    return [
        CheckOutcome(
            "no_critical_findings",
            not crit,
            ERROR,
            f"{len(crit)} critical {what} finding{'s' if len(crit) != 1 else ''}"
            + (f": {_listing([f.cache_key for f in crit])}" if crit else ""),
            {"critical": dg.MetadataValue.int(len(crit)), "findings": findings_table(crit)},
        ),
        CheckOutcome(
            "no_warning_findings",
            not warn,
            WARN,
            f"{len(warn)} {what} warning{'s' if len(warn) != 1 else ''}"
            + (f": {_listing([f.cache_key for f in warn])}" if warn else ""),
            {"warning": dg.MetadataValue.int(len(warn)), "findings": findings_table(warn)},
        ),
    ]


def _new_findings_check(findings: Sequence[Finding], previous: Optional[Previous]) -> CheckOutcome:
    current = {f.cache_key: f for f in findings}
    if previous is None or not isinstance(previous.get("finding_keys"), dict):
        return CheckOutcome(
            "no_new_findings",
            True,
            WARN,
            "first materialization: baseline recorded",
            {"baseline": dg.MetadataValue.bool(True), "findings": dg.MetadataValue.int(len(current))},
        )
    before: dict = previous.get("finding_keys")
    new = sorted(k for k in current if k not in before)
    resolved = sorted(k for k in before if k not in current)
    new_crit = [k for k in new if current[k].severity is Severity.CRITICAL]
    if new:
        desc = f"{len(new)} new finding{'s' if len(new) != 1 else ''} since run {previous.run_id[:8]}: {_listing(new)}"
    else:
        desc = f"no new findings since run {previous.run_id[:8]}" + (f"; {len(resolved)} resolved" if resolved else "")
    return CheckOutcome(
        "no_new_findings",
        not new,
        ERROR if new_crit else WARN,
        desc,
        {
            "new": dg.MetadataValue.json(_capped(new)),
            "new_critical": dg.MetadataValue.int(len(new_crit)),
            "resolved": dg.MetadataValue.json(_capped(resolved)),
            "new_findings": findings_table([current[k] for k in new]),
            "previous_run_id": dg.MetadataValue.text(previous.run_id),
        },
    )


def _policy_line(j: Judged) -> str:
    if j.policy is None:
        return f"{j.table}: {'; '.join(j.verdict.reasons)}"
    line = f"{j.table}: policy {j.policy!r} {j.change}"
    if j.verdict.reasons:
        line += ": " + "; ".join(j.verdict.reasons)
    return line + (f" ({j.verdict.note})" if j.verdict.note else "")


def policy_checks(
    tables: Mapping[str, TableFacts], findings: Sequence[Finding], previous: Optional[Previous]
) -> list[CheckOutcome]:
    """``no_policy_weakened`` and ``no_new_table_without_rls``: this run's tables against the state the previous
    run kept (``rls_state`` and ``finding_keys`` in its metadata), judged by ``dbguard diff``'s judgment."""
    from dbguard_pipeline.diff import rls_state_changes

    prev_state = previous.get("rls_state") if previous else None
    if previous is None or not isinstance(prev_state, dict):
        base = {"baseline": dg.MetadataValue.bool(True)}
        return [
            CheckOutcome("no_policy_weakened", True, ERROR, "first materialization: baseline recorded", base),
            CheckOutcome("no_new_table_without_rls", True, ERROR, "first materialization: baseline recorded", base),
        ]
    prev_keys = previous.get("finding_keys") if isinstance(previous.get("finding_keys"), dict) else {}
    changes = rls_state_changes(prev_state, prev_keys, tables, findings)
    weakened = [_policy_line(j) for j in changes if j.verdict.weaker]
    other = [_policy_line(j) for j in changes if not j.verdict.weaker]
    new_tables = sorted(t for t, now in tables.items() if t not in prev_state and not now.rls_enabled)
    prev_run = previous.run_id[:8]
    return [
        CheckOutcome(
            "no_policy_weakened",
            not weakened,
            ERROR,
            (
                f"{len(weakened)} polic{'ies' if len(weakened) != 1 else 'y'} weakened since run {prev_run}: "
                + "; ".join(weakened[:3])
                + ("; …" if len(weakened) > 3 else "")
            )
            if weakened
            else f"no policy weakened since run {prev_run}",
            {
                "weakened": dg.MetadataValue.json(_capped(weakened)),
                "other_changes": dg.MetadataValue.json(_capped(other)),
                "previous_run_id": dg.MetadataValue.text(previous.run_id),
            },
        ),
        CheckOutcome(
            "no_new_table_without_rls",
            not new_tables,
            ERROR,
            (
                f"{len(new_tables)} new table{'s' if len(new_tables) != 1 else ''} without row level security since run "
                f"{prev_run}: {_listing(new_tables)}"
            )
            if new_tables
            else f"no new table without RLS since run {prev_run}",
            {
                "new_tables_without_rls": dg.MetadataValue.json(_capped(new_tables)),
                "previous_run_id": dg.MetadataValue.text(previous.run_id),
            },
        ),
    ]


def _findings_metadata(target: Target, findings: Sequence[Finding], ignored: Sequence[Finding]) -> dict[str, Any]:
    c = count(findings)
    return {
        "database": dg.MetadataValue.text(target.name),
        "critical": dg.MetadataValue.int(c["critical"]),
        "warning": dg.MetadataValue.int(c["warning"]),
        "info": dg.MetadataValue.int(c["info"]),
        "ignored": dg.MetadataValue.int(len(ignored)),
        "findings": findings_table(findings),
        "finding_keys": dg.MetadataValue.json({f.cache_key: f.severity.value for f in findings}),
    }


def rls_audit_step(target: Target, snapshot: Snapshot, previous: Optional[Previous]) -> StepOutput:
    """Static findings (categories rls, tenancy, security, performance): no table is read."""
    from dbguard_pipeline import services
    from dbguard_pipeline.diff import table_states

    result = services.static_audit(snapshot, target.config)
    findings, ignored = list(result.findings), list(result.ignored)
    tables = table_states(snapshot, target.config)
    state = {t: facts.to_json() for t, facts in tables.items()}
    without_rls = [t for t, facts in tables.items() if not facts.rls_enabled]
    metadata = _findings_metadata(target, findings, ignored)
    metadata.update(
        {
            "tables_audited": dg.MetadataValue.int(len(state)),
            "tables_without_rls": dg.MetadataValue.int(len(without_rls)),
            "rls_state": dg.MetadataValue.json(state),
        }
    )
    checks = _severity_checks(findings, "schema")
    checks.append(_new_findings_check(findings, previous))
    checks.extend(policy_checks(tables, findings, previous))
    return StepOutput(tuple(findings), metadata, tuple(checks))


# --------------------------------------------------------------------------- tenant_coverage + data_integrity
def data_audit(target: Target, snapshot: Snapshot) -> AuditResult:
    """One pass of data metrics (each table read once) for both tenant_coverage and data_integrity: an
    AuditResult holding the data findings only, the coverage rows and the tables not measured."""
    from dbguard_pipeline import services

    return services.data_audit(target.dsn, snapshot, target.config)


def coverage_step(target: Target, result, previous: Optional[Previous]) -> StepOutput:
    config = target.config
    rows = list(result.coverage)
    not_measured = [f"{s}.{t}" for s, t in result.not_measured]
    total = sum(r.rows for r in rows)
    with_tenant = sum(r.with_tenant for r in rows)
    overall = round(100.0 * with_tenant / total, 4) if total else 100.0
    lowest = min((r.percent for r in rows), default=100.0)
    below = [r for r in rows if r.percent < config.coverage_threshold]
    by_table = {f"{r.schema}.{r.table}": r.percent for r in rows}
    table = table_value(
        [
            {
                "table": f"{r.schema}.{r.table}",
                "rows": r.rows,
                "with_tenant": r.with_tenant,
                "percent": float(r.percent),
                "below_threshold": r.percent < config.coverage_threshold,
                "estimated": bool(r.estimated),
            }
            for r in sorted(rows, key=lambda r: (r.percent, r.schema, r.table))
        ],
        [
            ("table", "string", "schema.table"),
            ("rows", "int", "rows counted (or estimated from a sample)"),
            ("with_tenant", "int", "rows carrying a tenant"),
            ("percent", "float", "with_tenant / rows"),
            ("below_threshold", "bool", "below coverage_threshold of dbguard.yaml"),
            ("estimated", "bool", "measured on a TABLESAMPLE"),
        ],
    )
    metadata = {
        "database": dg.MetadataValue.text(target.name),
        "coverage_percent": dg.MetadataValue.float(float(overall)),
        "lowest_table_percent": dg.MetadataValue.float(float(lowest)),
        "threshold_percent": dg.MetadataValue.float(float(config.coverage_threshold)),
        "tables_measured": dg.MetadataValue.int(len(rows)),
        "tables_below_threshold": dg.MetadataValue.int(len(below)),
        "tables_not_measured": dg.MetadataValue.int(len(not_measured)),
        "coverage": table,
        "coverage_by_table": dg.MetadataValue.json(by_table),
    }
    if not_measured:
        metadata["not_measured"] = dg.MetadataValue.json(_capped(not_measured))
    below_desc = [f"{r.schema}.{r.table} {r.percent:g}%" for r in below]
    if below:
        threshold = CheckOutcome(
            "coverage_above_threshold",
            False,
            ERROR,
            f"{len(below)} table{'s' if len(below) != 1 else ''} below {config.coverage_threshold:g}% tenant "
            f"coverage: {_listing(below_desc)}",
            {
                "below_threshold": dg.MetadataValue.json(_capped(below_desc)),
                "not_measured": dg.MetadataValue.json(_capped(not_measured)),
            },
        )
    elif not_measured:
        threshold = CheckOutcome(
            "coverage_above_threshold",
            False,
            WARN,
            f"{len(not_measured)} table{'s' if len(not_measured) != 1 else ''} not measured: {_listing(not_measured)}",
            {"not_measured": dg.MetadataValue.json(_capped(not_measured))},
        )
    else:
        threshold = CheckOutcome(
            "coverage_above_threshold",
            True,
            ERROR,
            f"all {len(rows)} tenant tables at or above {config.coverage_threshold:g}%",
            {"lowest_table_percent": dg.MetadataValue.float(float(lowest))},
        )
    before = previous.get("coverage_by_table") if previous else None
    if previous is None or not isinstance(before, dict):
        dropped = CheckOutcome(
            "coverage_not_dropped",
            True,
            WARN,
            "first materialization: baseline recorded",
            {"baseline": dg.MetadataValue.bool(True)},
        )
    else:
        drops = [
            f"{t}: {before[t]:g}% -> {p:g}%"
            for t, p in sorted(by_table.items())
            if isinstance(before.get(t), (int, float)) and p < before[t] - 1e-9
        ]
        prev_overall = previous.get("coverage_percent")
        overall_drop = isinstance(prev_overall, (int, float)) and overall < prev_overall - 1e-9
        dropped = CheckOutcome(
            "coverage_not_dropped",
            not drops and not overall_drop,
            WARN,
            (
                f"coverage dropped on {len(drops)} table{'s' if len(drops) != 1 else ''} since run "
                f"{previous.run_id[:8]}: {_listing(drops)}"
            )
            if drops
            else (
                f"overall coverage dropped from {prev_overall:g}% to {overall:g}%"
                if overall_drop
                else f"no coverage drop since run {previous.run_id[:8]}"
            ),
            {
                "dropped": dg.MetadataValue.json(_capped(drops)),
                "previous_coverage_percent": dg.MetadataValue.float(float(prev_overall))
                if isinstance(prev_overall, (int, float))
                else dg.MetadataValue.text("unknown"),
                "previous_run_id": dg.MetadataValue.text(previous.run_id),
            },
        )
    return StepOutput(tuple(rows), metadata, (threshold, dropped))


def integrity_step(target: Target, result, previous: Optional[Previous]) -> StepOutput:
    """Data findings (rules that read the data), except tenant coverage which tenant_coverage owns."""
    keep = lambda f: f.rule != "tenant_coverage"  # noqa: E731
    findings = [f for f in result.findings if keep(f)]
    ignored = [f for f in result.ignored if keep(f)]
    metadata = _findings_metadata(target, findings, ignored)
    metadata["tables_not_measured"] = dg.MetadataValue.int(len(result.not_measured))
    checks = _severity_checks(findings, "data")
    checks.append(_new_findings_check(findings, previous))
    return StepOutput(tuple(findings), metadata, tuple(checks))
