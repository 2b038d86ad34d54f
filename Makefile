# totesys-etl: every target works from a fresh clone and installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# unit-test and check-coverage run the suite in WORKERS processes (pytest-xdist), each with its own
# PostgreSQL cluster and moto server; a module's tests stay in one worker. WORKERS=0: one process.
WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile)
BIN := $(VENV)/bin
CHECKOV_VENV := .venv-checkov
ORDERS ?= 100000
# The courier figure (issue 29): one courier file of this many MB; 0 leaves it out (1024 takes minutes)
COURIER_MB ?= 0
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
CHROMIUM := /usr/bin/chromium
# Debian's libfaketime and PgBouncer, for the tests of a source that runs for years (issue 34)
FAKETIME := /usr/bin/faketime
PGBOUNCER := /usr/sbin/pgbouncer

.PHONY: requirements dev-setup security-test run-flake unit-test check-coverage run-checks \
        demo bench bench-bookkeeping tf-validate package lint-workflow clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME_STAMP): $(BIN)/python requirements.txt requirements-local.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements-local.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

## requirements: .venv with the project, its runtime packages and moto's server
requirements: $(RUNTIME_STAMP)

## dev-setup: adds the check tools (pytest, coverage, flake8, bandit; checkov in its own venv)
dev-setup: $(DEV_STAMP)

# $(CHROMIUM): Debian's Chromium, for the report's browser test; installed when missing (as root, else sudo)
$(CHROMIUM):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium

# $(FAKETIME), $(PGBOUNCER): installed when missing, as Chromium is (the tests step a server's clock
# with libfaketime and pool through PgBouncer in transaction mode)
$(FAKETIME) $(PGBOUNCER):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(notdir $@)

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	@touch $@

security-test: $(DEV_STAMP) $(CHECKOV_VENV)/.installed
	$(BIN)/bandit -q -r src -c pyproject.toml
	bash .ci/checkov.sh $(CHECKOV_VENV)/bin/checkov

run-flake: $(DEV_STAMP)
	$(BIN)/flake8 src test

unit-test: $(DEV_STAMP) $(CHROMIUM) $(FAKETIME) $(PGBOUNCER)
	$(BIN)/pytest -q $(PARALLEL)

## check-coverage: the whole suite under coverage, subprocesses included; fails under 90 %
check-coverage: $(DEV_STAMP) $(CHROMIUM) $(FAKETIME) $(PGBOUNCER)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -q --durations=30 $(PARALLEL)
	$(BIN)/coverage combine -q
	$(BIN)/coverage report --fail-under=90

lint-workflow:
	bash .ci/actionlint.sh

tf-validate:
	bash .ci/tf-validate.sh

package: $(RUNTIME_STAMP)
	$(BIN)/python .ci/package.py

run-checks: run-flake security-test lint-workflow tf-validate check-coverage

demo: $(RUNTIME_STAMP)
	$(BIN)/totesys-etl demo

## bench: the contract §8 figures; installs the bench's extra (pandas, awswrangler) first.
## MODE=cdc: the same figures with a cdc-mode ingest, to .local/bench-cdc.json beside bench.json's
bench: $(RUNTIME_STAMP)
ifeq ($(MODE),cdc)
	$(BIN)/python -m totesys_etl.bench.cdc --orders $(ORDERS)
else
	$(BIN)/pip install --quiet -c requirements.txt -e '.[bench]'
	$(BIN)/python -m totesys_etl.bench --orders $(ORDERS) --courier-mb $(COURIER_MB) \
		$(if $(filter 1 true yes,$(SKIP_BASELINES)),--skip-baselines)
endif

## bench-bookkeeping: the ingest's bookkeeping bound (manifest bytes, seconds) on a cluster of its own
bench-bookkeeping: $(RUNTIME_STAMP)
	$(BIN)/python -m totesys_etl.bench.bookkeeping --out .local/bench-bookkeeping.json

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build .coverage .coverage.* .pytest_cache
