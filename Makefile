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

## make test: the whole suite, against SQLite and PostgreSQL.
test: install
	$(BIN)/python -m pytest -q

## make bench: throughput and latency figures on SQLite and PostgreSQL (not a test).
bench: install
	$(BIN)/python tools/bench.py

clean:
	rm -rf $(VENV) var .pytest_cache
