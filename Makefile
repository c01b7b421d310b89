# Itinerant — every target installs what it needs first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Apache Kafka's jars (pinned in deploy/kafka/pom.xml), fetched with Maven; see docs/brokers.md.
KAFKA_HOME  := .kafka
KAFKA_STAMP := $(KAFKA_HOME)/.installed

.PHONY: install kafka demo test unit integration lint typecheck bench bench-quick soak clean tools postgres

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11+ or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

$(KAFKA_STAMP): deploy/kafka/pom.xml deploy/kafka/install.sh
	@bash deploy/kafka/install.sh $(KAFKA_HOME)

kafka: $(KAFKA_STAMP) ## fetch Apache Kafka (and a JRE and Maven when missing)

install: $(STAMP) kafka ## create .venv with the `itinerant` command, fetch Apache Kafka

# Debian tools the tests use: kcat (a real Kafka client), promtool (Prometheus) and Chromium
# (the console's browser tests drive /usr/bin/chromium; see docs/console.md#tests).
tools:
	@command -v kcat >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
	  echo "installing kcat and prometheus (promtool) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat prometheus >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# A PostgreSQL server on 127.0.0.1:55432 for the tests and local replicas (apt-get installs it when
# missing; a throwaway cluster in .postgres). See docs/operations.md#postgresql-state.
postgres:
	@bash deploy/postgres/ensure.sh .postgres 55432

demo: install ## run the whole system on the embedded broker with the sample requests
	$(BIN)/itinerant demo

test: install tools postgres ## the whole suite: lint, types, unit and integration tests
	$(BIN)/ruff check itinerant services tests bench docs
	$(BIN)/mypy itinerant services
	$(BIN)/pytest -q --durations=15

unit: install postgres
	$(BIN)/pytest -q tests/unit

integration: install tools postgres
	$(BIN)/pytest -q tests/integration

soak: install tools postgres ## the long run: 500 sagas on the cluster while replicas are added and a broker is killed (about 5 minutes)
	ITINERANT_SOAK=1 $(BIN)/pytest -q -s tests/integration/test_soak.py \
	  tests/integration/test_cluster_faults.py::test_a_power_cut_of_every_broker_and_service_resumes_the_sagas_in_flight

lint: install
	$(BIN)/ruff check itinerant services tests bench docs
	$(BIN)/ruff format --check itinerant services tests bench docs

typecheck: install
	$(BIN)/mypy itinerant services

bench: install ## the full benchmark (3 repeats, about an hour; docs/benchmarks.md); results in bench/results/
	$(BIN)/python -m bench.run

bench-quick: install ## a quick benchmark for development (about 3 minutes)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf .itinerant .pytest_cache .mypy_cache .ruff_cache
