"""Schema diff: snapshot vs snapshot, the changes that weaken tenant isolation, new and resolved findings."""

from dbguard_pipeline.diff.render import closing_line, describe_change, render
from dbguard_pipeline.diff.result import Change, SnapshotDiff
from dbguard_pipeline.diff.run import diff_snapshots
from dbguard_pipeline.diff.states import rls_state_changes, table_states
from dbguard_pipeline.model.snapshot_json import check_snapshot_json

__all__ = [
    "Change",
    "SnapshotDiff",
    "check_snapshot_json",
    "closing_line",
    "describe_change",
    "diff_snapshots",
    "render",
    "rls_state_changes",
    "table_states",
]
