"""The isolation probe: cross-tenant reads and writes as the application role, always rolled back."""

from dbguard_pipeline.probe.report import NotProbed, ProbeReport, ProbeResult, Target, not_probed_reason, witnesses
from dbguard_pipeline.probe.run import plan_targets, probe
from dbguard_pipeline.probe.session import ProbeRefused

__all__ = [
    "NotProbed",
    "ProbeRefused",
    "ProbeReport",
    "ProbeResult",
    "Target",
    "not_probed_reason",
    "plan_targets",
    "probe",
    "witnesses",
]
