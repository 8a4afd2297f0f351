# Set-up is part of every target: a fresh machine needs only python3 (3.11+), Java 17+ and mvn.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser promtool demo test bench chaos lint typecheck unit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/streamtrain broker fetch
	$(BIN)/streamtrain registry fetch
	touch $(STAMP)

demo: install
	$(BIN)/streamtrain demo

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy

# The dashboard test drives Debian's Chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The deploy/ tests check the Prometheus rules with promtool, from Debian's prometheus package.
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

test: lint typecheck browser promtool
	$(BIN)/pytest

# Writes bench/results.json and bench/results.md (about 6-8 minutes; --quick for a short run).
bench: install
	$(BIN)/python bench/run.py

# The broker kill -9 campaign at length (make test runs it with 10 cycles): CYCLES=N to choose.
CYCLES ?= 40
chaos: install
	STREAMTRAIN_CHAOS_CYCLES=$(CYCLES) $(BIN)/pytest -m chaos tests/integration/test_chaos.py

unit: install promtool
	$(BIN)/pytest tests/unit tests/pipeline src/streamtrain

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
