# The README's two commands: `make demo` and `make test`. Each does its own set-up.
# `make test-engine` runs the engine tests on Apache Kafka (needs Java 17+ and Maven).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEMO_SECONDS ?= 60
# Installs are pinned: uv.lock holds the resolved version of every dependency and extra, and
# `make` installs exactly that set. uv itself is pinned here and bootstrapped with pip into a
# tools venv of its own. It never downloads a Python: the one named by PYTHON is used.
UV_VERSION := 0.13.8
UV_HOME := .scribe/tools/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
LATEST_VENV := .scribe/latest-venv

.PHONY: install lock test-latest bench demo test test-engine test-fast lint schemas stack-up stack-down pgbouncer clean

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'

# --locked: a uv.lock that no longer matches pyproject.toml is an error ("run make lock"), never
# a silent re-resolve.
$(INSTALLED): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-extras --python $(PYTHON)
	@touch $(INSTALLED)

install: $(INSTALLED)

## Refresh the pins on purpose: re-resolve every dependency to its newest allowed release.
lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

## Lint and the unit tests against today's newest releases (not the lock), to see drift early.
test-latest: | $(UV)
	rm -rf $(LATEST_VENV)
	$(UV) venv --quiet --python $(PYTHON) $(LATEST_VENV)
	$(UV) pip install --quiet --refresh --python $(LATEST_VENV)/bin/python -e '.[dev]'
	@touch $(LATEST_VENV)/.installed
	$(UV) pip list --python $(LATEST_VENV)/bin/python | grep -iE '^(aiokafka|faust-streaming|redis|asyncpg|pydantic|mypy|ruff) '
	$(MAKE) lint test-fast VENV=$(LATEST_VENV)

## Run the pipeline on the embedded stack under a mixed load; ends by itself after DEMO_SECONDS.
demo: $(INSTALLED)
	$(VENV)/bin/scribe demo --seconds $(DEMO_SECONDS)

## Benchmarks side by side on the embedded stack (or SCRIBE_KAFKA_URL); BENCH_RUNS, BENCH_EVENTS.
bench: $(INSTALLED)
	$(VENV)/bin/scribe bench

## Lint, type-check, then every test but the engine ones (pyproject's addopts: -m 'not engine');
## the integration tests start their own embedded stack.
test: $(INSTALLED) lint
	$(PY) -m pytest

## Jaeger built from the Go module proxy (once: cached in .scribe/tools; minutes on cold Go
## caches, so outside any test's time limit), then a fresh 3-broker Apache Kafka cluster (jars
## from Maven Central, cached in .scribe/kafka), the engine tests on it (PostgreSQL and Redis
## embedded), then the cluster is stopped and deleted, also when the tests fail. The integration
## suite runs once, in make test (see the README to run it on Apache Kafka too).
test-engine: $(INSTALLED)
	$(PY) -m devkit.jaeger --build-only
	SCRIBE_TOPIC_REPLICATION=3 SCRIBE_TOPIC_PARTITIONS=6 scripts/kafka.sh run \
		--brokers 3 --dir .scribe/kafka-engine -- \
		$(PY) -m pytest -m engine --basetemp=.scribe/engine-tmp

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

## Debian's PgBouncer for tests/integration/test_pgbouncer.py, fetched without root into
## .scribe/tools/pgbouncer (the test fetches it too when it is missing).
pgbouncer: $(INSTALLED)
	$(PY) -m devkit.stack.pgbouncer .scribe/tools/pgbouncer

stack-up: $(INSTALLED)
	$(VENV)/bin/scribe stack up

stack-down: $(INSTALLED)
	$(VENV)/bin/scribe stack down

clean:
	-$(VENV)/bin/scribe stack down
	rm -rf .scribe .pytest_cache .mypy_cache .ruff_cache
