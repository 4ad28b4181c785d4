"""Schema diff: snapshot vs snapshot, the changes that weaken tenant isolation, new and resolved findings."""
from dbguard_pipeline.diff.compare import Change, SnapshotDiff, check_snapshot_json, closing_line, diff_snapshots, render

__all__ = ['Change', 'SnapshotDiff', 'check_snapshot_json', 'closing_line', 'diff_snapshots', 'render']
