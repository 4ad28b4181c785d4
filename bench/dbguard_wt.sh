#!/bin/sh
# Runs the dbguard CLI of the worktree this script lives in (or of DBGUARD_SRC) with the shared venv's interpreter:
#   bench/dbguard_wt.sh validate --dsn DSN --no-data      (a run.py --dbguard template)
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="${DBGUARD_SRC:-$here}" exec "${DBGUARD_PYTHON:-/work/main/.venv/bin/python}" -P -m dbguard_pipeline.cli "$@"  # -P: not the working directory
