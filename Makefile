# The README's two commands: `make demo` and `make test`. Each does its own set-up.
# `make test-engine` runs the engine tests on Apache Kafka (needs Java 17+ and Maven).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEMO_SECONDS ?= 60

.PHONY: install bench demo test test-engine test-fast lint schemas stack-up stack-down clean

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

## Lint, type-check, then every test but the engine ones (pyproject's addopts: -m 'not engine');
## the integration tests start their own embedded stack.
test: $(INSTALLED) lint
	$(PY) -m pytest

## A fresh 3-broker Apache Kafka cluster (jars from Maven Central, cached in .scribe/kafka), the
## engine tests and the integration suite on it (PostgreSQL and Redis embedded), then the cluster
## is stopped and deleted, also when the tests fail.
test-engine: $(INSTALLED)
	SCRIBE_TOPIC_REPLICATION=3 SCRIBE_TOPIC_PARTITIONS=6 scripts/kafka.sh run \
		--brokers 3 --dir .scribe/kafka-engine -- \
		$(PY) -m pytest -m "engine or integration" --basetemp=.scribe/engine-tmp

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
