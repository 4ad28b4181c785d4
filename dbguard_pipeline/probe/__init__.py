"""The isolation probe: cross-tenant reads and writes as the application role, always rolled back."""
from dbguard_pipeline.probe.run import ProbeRefused, ProbeReport, plan_targets, probe

__all__ = ['ProbeRefused', 'ProbeReport', 'plan_targets', 'probe']
