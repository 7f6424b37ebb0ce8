# fhirfus — the two commands: `make run` and `make test` (plus `make bench`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000
export FHIRFUS_DATABASE_URL ?= sqlite:///./var/fhirfus.db

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make run: migrate the embedded SQLite database, load the demo cohort if empty, serve on :8000 (auth off).
run: install
	$(BIN)/fhirfus db upgrade
	$(BIN)/fhirfus demo --if-empty
	FHIRFUS_AUTH=off $(BIN)/fhirfus serve --host $(HOST) --port $(PORT)

## make test: lint (ruff) and types (mypy), then the whole suite against SQLite and PostgreSQL.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

## make bench: the figures the issues ask for, on SQLite and PostgreSQL (not a test): CRUD over HTTP,
## search on 1,000,000 resources, transaction-Bundle ingest, the cost of authentication, Bulk Data
## export of 1,000,000 resources, the analysis export of 10,000 patients, searches with skewed criteria, a hub's pull of 100,000
## resources from a site server (beside a local load of the same files), Subscription notification
## latency under 200 writes/s, fhirfus beside Medplum per CPU-second (skipped without a built Medplum server:
## MEDPLUM_SERVER_DIR, see bench/medplum.py). A full run loads large databases (tens of minutes);
## `make bench BENCH_ARGS=--quick` is a smoke run of the first three.
BULK_RESOURCES ?= 1000000
ANALYSIS_PATIENTS ?= 10000
PULL_RESOURCES ?= 100000
bench: install
	$(BIN)/python bench/crud.py $(BENCH_ARGS)
	$(BIN)/python bench/search.py $(BENCH_ARGS)
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)
	$(BIN)/python bench/validation.py
	$(BIN)/python bench/auth.py
	$(BIN)/python bench/bulk_export.py --resources $(BULK_RESOURCES)
	$(BIN)/python bench/analysis_export.py --patients $(ANALYSIS_PATIENTS)
	$(BIN)/python bench/terminology_views.py $(BENCH_ARGS)
	$(BIN)/python bench/search_after_load.py $(BENCH_ARGS)
	$(BIN)/python bench/search_skew.py $(BENCH_ARGS)
	$(BIN)/python bench/scale_out.py $(BENCH_ARGS)
	$(BIN)/python bench/pull.py --resources $(PULL_RESOURCES) $(BENCH_ARGS)
	$(BIN)/python bench/subscriptions.py $(BENCH_ARGS)
	$(BIN)/python bench/medplum.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
