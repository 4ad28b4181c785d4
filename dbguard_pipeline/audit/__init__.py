"""The audit run: snapshot -> data metrics -> rules -> ignores -> AuditResult."""
from dbguard_pipeline.audit.run import build_result, collect_data, data_findings, run_audit, run_audit_for_demo, selected_rules, split_ignored, static_findings

__all__ = ['build_result', 'collect_data', 'data_findings', 'run_audit', 'run_audit_for_demo', 'selected_rules', 'split_ignored', 'static_findings']
