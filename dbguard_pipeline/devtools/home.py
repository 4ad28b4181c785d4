"""DAGSTER_HOME for local use: ``python -m dbguard_pipeline.devtools.home`` (run by ``make dev``) creates the
folder and writes a ``dagster.yaml`` there when none exists, so ``dagster dev`` starts with a persistent
local instance (SQLite storage in that folder) and without warnings. An existing file is never touched.
For a shared deployment, point DAGSTER_HOME at a folder holding ``docs/dagster.yaml.example`` (PostgreSQL).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

DEFAULT_HOME = ".dagster_home"

DAGSTER_YAML = """\
# Dagster instance for dbguard on one machine (written by `make dev`; edit freely, it is never rewritten).
# Storage: SQLite files in this folder (Dagster's default). For a team, use PostgreSQL instead:
# see docs/dagster.yaml.example and docs/dagster.md.
telemetry:
  enabled: false

nux:
  enabled: false

run_queue:
  max_concurrent_runs: 4

run_monitoring:
  enabled: true
  start_timeout_seconds: 180

retention:
  schedule:
    purge_after_days: 90
  sensor:
    purge_after_days:
      skipped: 7
      failure: 30
      success: -1
"""


def ensure_dagster_home(home: Optional[str | os.PathLike] = None) -> Path:
    """Create DAGSTER_HOME (default ``./.dagster_home``) and its dagster.yaml when missing."""
    path = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).resolve()
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML, encoding="utf-8")
    return path


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = ensure_dagster_home(argv[0] if argv else None)
    print(f"DAGSTER_HOME={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
