# make demo | make test | make ui | make up | make bench — each sets itself up first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
B123_HOME ?= .b123
DAGSTER_LOCAL := $(abspath $(B123_HOME))/dagster

.PHONY: setup demo test ui bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

$(VENV)/.bench-installed: setup.py $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/b123 demo

test: setup
	$(BIN)/pytest -q

# The Dagster UI on the same local instance the demo and `b123 sync` use.
ui: setup
	mkdir -p $(DAGSTER_LOCAL)
	cp -n b123_pipelines/instance/dagster.yaml $(DAGSTER_LOCAL)/dagster.yaml 2>/dev/null || true
	DAGSTER_HOME=$(DAGSTER_LOCAL) $(BIN)/dagster dev -w workspace.yaml

bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(B123_HOME) .pytest_cache
