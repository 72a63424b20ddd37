# The README's two commands: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEMO_SECONDS ?= 60

.PHONY: install bench demo test test-fast lint schemas stack-up stack-down clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(INSTALLED)

install: $(INSTALLED)

## Run the pipeline on the embedded stack under a mixed load; ends by itself after DEMO_SECONDS.
demo: $(INSTALLED)
	$(VENV)/bin/scribe demo --seconds $(DEMO_SECONDS)

## Benchmarks side by side on the embedded stack (or SCRIBE_KAFKA_URL); BENCH_RUNS, BENCH_EVENTS.
bench: $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(VENV)/bin/scribe bench

## Lint, type-check, then every test (the integration tests start their own embedded stack).
test: $(INSTALLED) lint
	$(PY) -m pytest

## Unit tests only: no servers.
test-fast: $(INSTALLED)
	$(PY) -m pytest -m "not integration and not engine and not faults and not dashboard"

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

## Regenerate schemas/json from the models.
schemas: $(INSTALLED)
	$(PY) -m schemas.json_schema

stack-up: $(INSTALLED)
	$(VENV)/bin/scribe stack up

stack-down: $(INSTALLED)
	$(VENV)/bin/scribe stack down

clean:
	-$(VENV)/bin/scribe stack down
	rm -rf .scribe .pytest_cache .mypy_cache .ruff_cache
