# make demo | make test | make ui | make up | make bench — each sets itself up first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
B123_HOME ?= .b123
DAGSTER_LOCAL := $(abspath $(B123_HOME))/dagster

.PHONY: setup demo test ui up bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: setup.py emulators/setup.py | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]" -e ./emulators
	touch $@

$(VENV)/.bench-installed: setup.py $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/b123 db upgrade --app-tables
	$(BIN)/b123 demo

test: setup
	$(BIN)/pytest -q -n 2

# The Dagster UI on the same local instance the demo and `b123 sync` use.
ui: setup
	mkdir -p $(DAGSTER_LOCAL)
	cp -n b123_pipelines/instance/dagster.yaml $(DAGSTER_LOCAL)/dagster.yaml 2>/dev/null || true
	DAGSTER_HOME=$(DAGSTER_LOCAL) $(BIN)/dagster dev -w workspace.yaml

# The webserver and the daemon on the configured instance, so the sensors turn logins and refresh
# requests into syncs on their own. DAGSTER_HOME if set (production: the top-level dagster.yaml with
# DAGSTER_PG_* set), else the local instance `make ui` uses. Each system's pool limit is applied
# first (python -m b123_pipelines.pools). Run workers write Dagster's batched events 100 at a time
# (DAGSTER_EVENT_BATCH_SIZE, as in the image). Ctrl-C stops both.
UP_HOST ?= 127.0.0.1
UP_PORT ?= 3000
up: setup
	@home="$${DAGSTER_HOME:-$(DAGSTER_LOCAL)}"; \
	if [ -z "$$DAGSTER_HOME" ]; then \
		mkdir -p "$$home"; cp -n b123_pipelines/instance/dagster.yaml "$$home/dagster.yaml" 2>/dev/null || true; \
	fi; \
	export DAGSTER_HOME="$$home"; \
	export DAGSTER_EVENT_BATCH_SIZE="$${DAGSTER_EVENT_BATCH_SIZE:-100}"; \
	echo "Dagster instance $$home; webserver on http://$(UP_HOST):$(UP_PORT)"; \
	$(BIN)/python -m b123_pipelines.pools || exit 1; \
	$(BIN)/dagster-daemon run -w workspace.yaml & daemon=$$!; \
	trap 'kill $$daemon 2>/dev/null; wait $$daemon 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	$(BIN)/dagster-webserver -w workspace.yaml -h $(UP_HOST) -p $(UP_PORT)

bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(B123_HOME) .pytest_cache
