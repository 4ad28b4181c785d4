"""Where the static audit and the probe disagree on a relation: the audit calls its isolation broken and every
probe held, or a probe leaked where the audit found nothing wrong. Each is a blind spot of the probe or a false
positive of the audit, and a user deserves to know which relations the two views do not agree on."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Snapshot
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


def _leak_claims(findings: Iterable[Finding], snapshot: Optional[Snapshot]) -> dict[str, list[Finding]]:
    """Findings that say a relation lets another tenant's rows through, per relation. A table without the
    tenant column (``missing_tenant_column``) counts when its row level security is off; a view counts the
    claims on the tables it reads (it shows what they leak)."""
    rls_off = {t.qualified for t in snapshot.tables if not t.rls_enabled} if snapshot is not None else set()
    by_table: dict[str, list[Finding]] = {}
    for f in findings:
        q = f"{f.schema}.{f.table}"
        if f.rule in LEAK_RULES or (f.rule == "missing_tenant_column" and q in rls_off):
            by_table.setdefault(q, []).append(f)
    for v in snapshot.views if snapshot is not None else ():
        for d in v.depends_on:
            by_table.setdefault(v.qualified, []).extend(
                f for f in by_table.get(d, []) if LEAK_RULES.get(f.rule) is None or "select" in LEAK_RULES[f.rule])
    return by_table


def disagreements(report: ProbeReport, findings: Iterable[Finding], snapshot: Optional[Snapshot] = None
                  ) -> dict[str, list[dict[str, Any]]]:
    """Per relation probed: both views when they disagree (see the module docstring)."""
    by_table = _leak_claims(findings, snapshot)
    out: dict[str, list[dict[str, Any]]] = {}
    for q in report.tables:
        audit = by_table.get(q, [])
        verdicts = {cmd: report.outcome(q, cmd)[0] for cmd in report.commands_of(q)}
        leaked = sorted(c for c, v in verdicts.items() if v == "leak")
        audit_view = [{"rule": f.rule, "table": f"{f.schema}.{f.table}", "object": f.object,
                       "severity": f.severity.value} for f in audit]
        probe_view = {"verdicts": verdicts, "leaked": leaked}
        if audit and not leaked:
            concerned: set[str] = set()
            for f in audit:
                concerned.update(LEAK_RULES.get(f.rule) or verdicts)
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
