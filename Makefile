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

.PHONY: install test lint format browser demo dev home validate benchmarks clean

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

# The UI test (sync_pipeline_tests/e2e/test_ui.py) drives Debian's `chromium` headless. Installed here when it is
# missing and apt-get can (as root, or with passwordless sudo); otherwise that test skips and says why. Nothing to do,
# and instant, when chromium is on PATH. CHROMIUM_LOG keeps apt's output; only a failure shows its end.
CHROMIUM_LOG := $(VENV)/chromium-install.log
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "chromium: not installed and no apt-get here; the UI test will skip"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "chromium: not installed and apt-get needs root; the UI test will skip"; exit 0; fi; \
	echo "chromium: installing Debian's chromium for the UI test (apt-get, log in $(CHROMIUM_LOG))"; \
	mkdir -p $(VENV); \
	apt_install() { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >>$(CHROMIUM_LOG) 2>&1; }; \
	apt_install || { $$sudo apt-get update -qq >>$(CHROMIUM_LOG) 2>&1 && apt_install; } || \
	{ tail -n 5 $(CHROMIUM_LOG); echo "chromium: could not be installed; the UI test will skip"; }

test: lint browser
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
