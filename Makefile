# Two commands for a newcomer: `make demo` and `make test`. Each bootstraps the virtual environment
# from the pinned lock file the first time (about 35 s) and reuses it afterwards.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dbguard-installed
DEV_STAMP := $(VENV)/.dbguard-dev-installed

.PHONY: install demo test lint security integration bench dev ui-screenshot ui-screenshot-fix lock clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# The dev extra of pyproject.toml (ruff, mypy, type stubs, pre-commit), pinned there.
$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/dbguard demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# What CI runs before the tests (and pre-commit on each commit): lint, format, types, the layer test.
# Every check runs; the target fails when any of them failed.
LINT_CHECKS := "$(BIN)/ruff check ." "$(BIN)/ruff format --check ." "$(BIN)/mypy" \
               "$(BIN)/python -m pytest -q dbguard_tests/test_layers.py"
lint: $(DEV_STAMP)
	@status=0; for check in $(LINT_CHECKS); do echo "+ $$check"; $$check || status=1; done; exit $$status

security: $(STAMP)
	$(BIN)/python -m pytest -q -m security

integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

bench: $(STAMP)
	$(BIN)/python -m bench.run

# The Dagster UI and daemon on http://127.0.0.1:3000 (DAGSTER_HOME defaults to ./.dagster_home, whose
# dagster.yaml is written once): `dg dev` serves the dg project of pyproject.toml ([tool.dg]); alert links
# point at this port (DBGUARD_WEBSERVER_URL). `dagster dev -w workspace.yaml` still works too.
dev: $(STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(BIN)/python -m dbguard_pipeline.devtools.home && \
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} \
	DBGUARD_WEBSERVER_URL=$${DBGUARD_WEBSERVER_URL:-http://127.0.0.1:$${DAGSTER_PORT:-3000}} \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dg dev --use-active-venv -h 127.0.0.1 -p $${DAGSTER_PORT:-3000}

# Audit the demo, serve the UI on a free local port, and save the asset lineage page as seen by headless
# Chromium (Debian's `chromium` package) to docs/img/lineage.png.
ui-screenshot: $(STAMP)
	$(BIN)/python -m dbguard_pipeline.devtools.ui_screenshot --out docs/img/lineage.png

ui-screenshot-fix: $(STAMP)
	$(BIN)/python -m dbguard_pipeline.devtools.ui_screenshot --fix-flow docs/img/fix_flow.png

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -vi '^dbguard' > requirements.lock

clean:
	rm -rf $(VENV) .dagster_home
