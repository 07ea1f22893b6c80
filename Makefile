# The commands a newcomer and CI run. Each sets itself up: a virtual environment in .venv,
# (re)installed whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_HOME := $(CURDIR)/.demo

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: start a local queue, run the user guide's Getting Started example, stop the queue
demo: $(STAMP)
	@export HMQ_HOME=$(DEMO_HOME); \
	$(BIN)/hmq up --workers 2 || exit 1; \
	$(BIN)/python examples/getting_started.py; status=$$?; \
	$(BIN)/hmq down; exit $$status

## test: the whole suite (PostgreSQL is started from the machine's binaries by a fixture)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hmq lambdas worker tests bench
	$(BIN)/ruff format --check hmq lambdas worker tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format hmq lambdas worker tests bench
	$(BIN)/ruff check --fix hmq lambdas worker tests bench

## bench: throughput and memory figures (see README, Benchmarks)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .mypy_cache .ruff_cache
