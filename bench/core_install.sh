#!/usr/bin/env bash
# The core install (no extras) in a fresh virtual environment runs the CLI and the pytest plugin:
#   bash bench/core_install.sh            (about a minute; prints the size of the venv and each exit code)
# Expected exit codes on the demo: validate 1 (critical findings), test-isolation 1 (leaks), generate 0,
# migrate 0, pytest 0 (the applied fix migrations closed every leak); no dagster / pandas / great_expectations installed.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/dbguard-core-XXXXXX)
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$ROOT" pytest==9.2.0 2>/dev/null || { echo "install failed"; exit 2; }
B="$WORK/venv/bin"
echo "venv size: $(du -sh "$WORK/venv" | cut -f1)"
"$B/python" -c "import importlib.util as u; print('extras absent:', all(u.find_spec(m) is None for m in ('dagster','pandas','great_expectations')))"
export DBGUARD_HOME="$WORK/home"
cd "$WORK"
"$B/dbguard" demo --serve > url.txt 2> serve.err &
SERVE=$!
for _ in $(seq 60); do [ -s url.txt ] && break; sleep 1; done
export DBGUARD_DATABASE_URL=$(cat url.txt)
"$B/dbguard" validate --quiet;                               echo "validate: exit $?"
"$B/dbguard" test-isolation > /dev/null;                     echo "test-isolation: exit $?"
"$B/dbguard" generate-migration --all --out-dir migrations > /dev/null 2>&1; echo "generate-migration --all: exit $?"
"$B/dbguard" migrate up --dir migrations > /dev/null 2>&1;   echo "migrate up: exit $?"
"$B/python" -m pytest -q --dbguard-dsn "$DBGUARD_DATABASE_URL" -m dbguard_isolation > pytest.txt 2>&1; echo "pytest plugin: exit $? ($(tail -1 pytest.txt))"
kill -TERM "$SERVE"; wait "$SERVE"
rm -rf "$WORK"
