"""Where the static audit and the probe disagree on a relation: the audit calls its isolation broken and every
probe held, or a probe leaked where the audit found nothing wrong. Each is a blind spot of the probe or a false
positive of the audit, and a user deserves to know which relations the two views do not agree on."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.probe.report import ProbeReport

# findings that claim rows of another tenant can be read or written, and the commands they concern
# (None: every command the probe covers on that relation)
LEAK_RULES: dict[str, Any] = {
    "rls_disabled_with_tenant_column": None,
    "policy_exists_rls_disabled": None,
    "rls_not_forced": None,
    "weak_rls_policy": None,
    "missing_with_check": ("insert", "update"),
    "security_definer_view": ("select",),
    "rls_references_user_metadata": None,
}


def disagreements(report: ProbeReport, findings: Iterable[Finding]) -> dict[str, list[dict[str, Any]]]:
    by_table: dict[str, list[Finding]] = {}
    for f in findings:
        if f.rule in LEAK_RULES:
            by_table.setdefault(f"{f.schema}.{f.table}", []).append(f)
    out: dict[str, list[dict[str, Any]]] = {}
    for q in report.tables:
        audit = by_table.get(q, [])
        verdicts = {cmd: report.outcome(q, cmd)[0] for cmd in report.commands_of(q)}
        leaked = sorted(c for c, v in verdicts.items() if v == "leak")
        audit_view = [{"rule": f.rule, "object": f.object, "severity": f.severity.value} for f in audit]
        probe_view = {"verdicts": verdicts, "leaked": leaked}
        if audit and not leaked:
            concerned = set()
            for f in audit:
                concerned.update(LEAK_RULES[f.rule] or verdicts)
            held = [c for c in sorted(concerned) if verdicts.get(c) == "isolated"]
            if not held:
                continue  # not probed or an error there: no verdict to disagree with
            rules = ", ".join(sorted({f.rule for f in audit}))
            note = (f"the audit reports {rules}, but every probe held on {', '.join(held)}: a blind spot of the "
                    f"probe or a false positive of the audit")
        elif leaked and not audit:
            note = (f"the probe found a leak on {', '.join(leaked)}, but the static audit reports nothing that "
                    f"lets another tenant's rows through: a blind spot of the audit")
        else:
            continue
        out[q] = [{"audit": audit_view, "probe": probe_view, "note": note}]
    return out
