# The commands a newcomer and CI run. Each sets itself up: a virtual environment in .venv,
# (re)installed whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_HOME := $(CURDIR)/.demo

.PHONY: install demo test lint format bench wheel clean

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

## test: the whole suite (PostgreSQL is started from the machine's binaries by a fixture), slowest tests last
test: $(STAMP)
	$(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hmq lambdas worker tests bench
	$(BIN)/ruff format --check hmq lambdas worker tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format hmq lambdas worker tests bench
	$(BIN)/ruff check --fix hmq lambdas worker tests bench

## bench: throughput and memory figures, and hmq beside RQ and Lithops (see README, Benchmarks); the peers
## go into a virtual environment of their own, .bench-venv, made by the bench itself
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## wheel: the distribution, dist/hmq-VERSION-py3-none-any.whl (`pip install 'dist/hmq-...whl[server]'`)
WHEEL_DIR ?= dist
wheel:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; $(call build_wheel,$$tmp,$(abspath $(WHEEL_DIR)))

# $(call build_wheel,SRC,OUT): copy the sources to the empty directory SRC and build the wheel from
# there into OUT, so that no stale build/ or egg-info of the checkout gets into it.
build_wheel = mkdir -p "$(1)"; \
	tar -cf - --exclude=__pycache__ pyproject.toml README.md LICENSE hmq lambdas worker | tar -xf - -C "$(1)"; \
	$(PYTHON) -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$(2)" "$(1)"

clean:
	rm -rf $(VENV) $(DEMO_HOME) dist .pytest_cache .mypy_cache .ruff_cache

## build-ApiFunction, build-MigrateFunction: the AWS Lambda package, for `sam build` (infra/template.yaml).
## sam build runs them in a copy of this directory with ARTIFACTS_DIR set. The project's wheel
## (as `make wheel` builds it) is installed with the server extra for the Lambda platform
## (CPython 3.12, x86_64, binary wheels only).
LAMBDA_PYTHON ?= python3.12
LAMBDA_PLATFORM := --platform manylinux2014_x86_64 --implementation cp --python-version 3.12 --only-binary=:all:

.PHONY: build-ApiFunction build-MigrateFunction
build-ApiFunction build-MigrateFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 1; }
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(call build_wheel,$$tmp/src,$$tmp/wheel); \
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-compile --upgrade \
		--target "$(ARTIFACTS_DIR)" $(LAMBDA_PLATFORM) "$$(ls "$$tmp"/wheel/hmq-*.whl)[server]"
	@# Bytecode for the runtime's Python speeds up cold starts; only a 3.12 interpreter can make it.
	@if $(LAMBDA_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then \
		$(LAMBDA_PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)" >/dev/null; \
	else echo "note: no Python 3.12 ($(LAMBDA_PYTHON)) here; the package ships without bytecode" >&2; fi
