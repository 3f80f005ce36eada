# Two commands from a fresh clone: `make demo` and `make test`. Each creates .venv and installs the
# project when pyproject.toml is newer than the last install, and is quick when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEFAULT_HOME := $(CURDIR)/.dagster_home
# A DAGSTER_HOME from the environment wins (production); otherwise a persistent one in the checkout,
# so run history, sensor cursors and run keys survive restarts.
DAGSTER_HOME ?= $(DEFAULT_HOME)
export DAGSTER_HOME

.PHONY: install test lint format demo dev home validate benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# The embedded home gets the top-level dagster.yaml; a home you point DAGSTER_HOME at keeps its own.
home:
	@mkdir -p "$(DAGSTER_HOME)"
	@if [ "$(DAGSTER_HOME)" = "$(DEFAULT_HOME)" ]; then cp -p dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"; fi

# Format and lint first: a style slip fails in seconds, not after the suite.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

demo: install home
	$(BIN)/sync-pipeline demo

dev: install home
	$(BIN)/sync-pipeline dev

validate: install home
	$(BIN)/dagster definitions validate -w workspace.yaml

benchmarks: install
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache .hypothesis
