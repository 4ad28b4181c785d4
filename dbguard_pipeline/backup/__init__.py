"""Backups before data-changing migrations, and verified restores.

    take(dsn, tables=[...] or None, out_dir=..., label=...) -> Backup      one new folder per run
    restore(path, dsn, verify=..., scratch=...) -> RestoreResult           in place, or a scratch dry run
    list_backups(out_dir), prune(out_dir, keep=..., keep_days=...)        the backup folder and retention

A backup is ``pg_dump -Fc`` of the tables plus ``manifest.json`` (per table: row count and an
order-independent checksum of its rows, computed on the snapshot the dump used). The core never imports
Dagster; the CLI (commands/backup.py, commands/restore.py) and the migration runner call these functions.
"""

from dbguard_pipeline.backup.manifest import BackupError, Manifest, TableEntry, read_manifest
from dbguard_pipeline.backup.restore import RestoreResult, TableCheck, compare, open_backup, restore
from dbguard_pipeline.backup.store import Listed, list_backups, prune
from dbguard_pipeline.backup.take import Backup, human_bytes, take

__all__ = [
    "Backup",
    "BackupError",
    "Listed",
    "Manifest",
    "RestoreResult",
    "TableCheck",
    "TableEntry",
    "compare",
    "human_bytes",
    "list_backups",
    "open_backup",
    "prune",
    "read_manifest",
    "restore",
    "take",
]
