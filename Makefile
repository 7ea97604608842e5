# Two commands matter: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB := demo/demo.db

.PHONY: demo test lint format bench bytecode venv pg-install browser-install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(MAKE) --no-print-directory bytecode
	@touch $(STAMP)

# pip compiles what it installs, but the package is installed in place (editable), so its
# own modules are compiled here: a run with PYTHONDONTWRITEBYTECODE set would otherwise
# compile them again on every start.
bytecode:
	@$(BIN)/python -m compileall -q loyaltyctl

venv: $(STAMP)

demo: $(STAMP) bytecode
	@bash scripts/demo.sh $(DEMO_DB)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy loyaltyctl

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# PostgreSQL binaries are needed for the PostgreSQL half of the suite; the test run
# starts its own throwaway cluster with them.
pg-install:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { echo "installing PostgreSQL binaries with apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# The HTML statement test renders a page in headless Chromium.
browser-install:
	@command -v chromium >/dev/null 2>&1 || \
	  { echo "installing Chromium with apt (for the HTML statement test)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) pg-install browser-install lint
	$(BIN)/pytest -q -n 2

bench: $(STAMP) pg-install bytecode
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
