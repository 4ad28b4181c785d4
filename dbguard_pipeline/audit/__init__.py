"""The audit run: snapshot -> data metrics -> rules -> ignores -> AuditResult."""

from dbguard_pipeline.audit.run import (
    AuditResult,
    CoverageRow,
    build_result,
    check_rule_ids,
    collect_data,
    data_audit,
    data_findings,
    run_audit,
    selected_rules,
    split_ignored,
    static_audit,
    static_findings,
    with_severity,
)

__all__ = [
    "AuditResult",
    "CoverageRow",
    "build_result",
    "check_rule_ids",
    "collect_data",
    "data_audit",
    "data_findings",
    "run_audit",
    "selected_rules",
    "split_ignored",
    "static_audit",
    "static_findings",
    "with_severity",
]
