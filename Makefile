# Set-up is part of every target: a fresh machine needs only python3 (3.11+), Java 17+ and mvn.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser promtool demo test bench chaos chaos-broker lint typecheck unit clean

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
	$(BIN)/ruff check src tests chaos
	$(BIN)/ruff format --check src tests chaos

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

# The chaos campaign (chaos/, README "Reliability"): seeded faults for CHAOS_MINUTES on a
# 3-broker cluster, then chaos/report.json and a table (make test runs a 36-second one).
CHAOS_MINUTES ?= 5
CHAOS_SEED ?= 1
chaos: install
	CHAOS_MINUTES=$(CHAOS_MINUTES) CHAOS_SEED=$(CHAOS_SEED) $(BIN)/python -m chaos

# The only broker kill -9'ed and restarted CYCLES times (make test runs 2 cycles).
CYCLES ?= 40
chaos-broker: install
	STREAMTRAIN_CHAOS_CYCLES=$(CYCLES) $(BIN)/pytest -m chaos tests/integration/test_chaos.py

unit: install promtool
	$(BIN)/pytest tests/unit tests/pipeline src/streamtrain

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
