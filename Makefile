# Two commands for a newcomer: `make demo` and `make test`. Each bootstraps the virtual environment
# from the pinned lock file the first time (about 30 s) and reuses it afterwards.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dbguard-installed

.PHONY: demo test security integration bench dev lock clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dbguard demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

security: $(STAMP)
	$(BIN)/python -m pytest -q -m security

integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

bench: $(STAMP)
	$(BIN)/python -m bench.run

dev: $(STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(BIN)/python -m dbguard_pipeline.defs.home && \
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(BIN)/dagster dev -w workspace.yaml

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -vi '^dbguard' > requirements.lock

clean:
	rm -rf $(VENV) .dagster_home
