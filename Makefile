# Two commands on a fresh clone: `make run` and `make test`. Only Python 3.11+ is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test test-fast install lint bench bench-triage bench-ingest bench-ab bench-queues bench-metrics bench-delivery bench-http-client bench-scale clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is required"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/triage migrate
	$(BIN)/triage bootstrap --if-empty
	$(BIN)/triage serve

# Buyer traffic for the demo shop of a running `make run` (in a second terminal); watch it in /console.
demo: $(STAMP)
	$(BIN)/triage demo

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/pytest

# The inner loop: everything but the tests marked slow (fuzzing, the crash test).
test-fast: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/pytest -m "not slow"

# Benchmarks print each figure beside its baseline measured in the same run. ingest and queues need wrk
# (Debian package `wrk`) and a PostgreSQL server (TRIAGE_TEST_POSTGRES_URL, default postgres@127.0.0.1:5432).
bench: bench-triage bench-ingest bench-queues bench-metrics bench-delivery bench-http-client bench-scale

bench-triage: $(STAMP)
	$(BIN)/python bench/triage.py

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

# The same-run A/B of ingestion against an earlier revision (bench/ab_ingest.py --help; not part of `bench`).
bench-ab: $(STAMP)
	$(BIN)/python bench/ab_ingest.py

bench-metrics: $(STAMP)
	$(BIN)/python bench/metrics.py

bench-delivery: $(STAMP)
	$(BIN)/python bench/delivery.py

bench-http-client: $(STAMP)
	$(BIN)/python bench/http_client.py

# Loads a big and a small database through the service (minutes), then times the same operations on both.
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

bench-queues: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/queues.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
