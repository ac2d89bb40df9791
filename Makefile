# Entry points of the project. Everything runs from the virtual environment in .venv/,
# which `make venv` creates from requirements/ and pyproject.toml (and re-creates when they change).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_QUIET := --quiet --disable-pip-version-check
S3 ?= moto
DB ?= dynamodb

.PHONY: help venv test lint format demo stack pyz pyz-nodeps package-lambda ceph-up ceph-down ceph-test pg-up pg-down pyz-all dist bench bench-tools bench-baseline fuzz reliability-faults reliability-crash reliability-load clean

help:
	@echo "make demo            upload + download round trip on the local stack (moto)"
	@echo "make test            lint and the whole test suite (what CI runs)"
	@echo "make stack [S3=ceph] run the local stack in the foreground (Ctrl+C stops it)"
	@echo "make stack DB=postgres [S3=ceph]   the same with state and jobs in PostgreSQL (starts pg-up)"
	@echo "make demo DB=postgres   the demo round trip with state and jobs in PostgreSQL"
	@echo "make pyz             build dist/ghga-cli.pyz (shiv, pycurl bundled)"
	@echo "make pyz-nodeps      build dist/ghga-cli-nodeps.pyz (uses the system's pycurl)"
	@echo "make pyz-all         zipapps per OS/CPU/CPython into dist/pyz/ (runs the Linux x86_64 ones)"
	@echo "make dist            sdist + wheel of the client into dist/, twine check"
	@echo "make package-lambda  chalice package: CloudFormation in build/out/lambda, Terraform in build/out/lambda-tf"
	@echo "make ceph-up / ceph-down   a single-node Ceph RGW on 127.0.0.1 (root, Debian)"
	@echo "make ceph-test       only the tests marked ceph, failing if no RGW runs"
	@echo "make pg-up / pg-down a local PostgreSQL 15 on 127.0.0.1:55432, data in .pg/ (Debian)"
	@echo "make bench           ghga-cli (and its e572fae 'before') vs other S3 clients -> bench/RESULTS.md"
	@echo "make bench-baseline  (re)build the 'before' ghga-cli of BASELINE_REV in bench/.baseline-venv"
	@echo "make fuzz            schemathesis on both OpenAPI documents (local stack)"
	@echo "make reliability-faults / reliability-crash / reliability-load   long reliability runs"

$(STAMP): pyproject.toml requirements/server.txt requirements/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade "pip<26.3" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install $(PIP_QUIET) -r requirements/dev.txt -e . 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	@touch $@

venv: $(STAMP)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: venv lint
	$(PY) -m pytest $(PYTEST_ARGS)

# DB=postgres: state and jobs in PostgreSQL (build/pg-up.sh); the default command is unchanged.
demo: venv
	$(PY) build/demo.py $(if $(filter-out dynamodb,$(DB)),--db $(DB) )$(DEMO_ARGS)

stack: venv
	$(PY) build/stack.py --s3 $(S3) --db $(DB)

pyz: venv
	@mkdir -p dist
	$(PY) -m shiv --quiet -c ghga-cli -p "/usr/bin/env python3" -o dist/ghga-cli.pyz . 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	@echo "built dist/ghga-cli.pyz ($$(du -h dist/ghga-cli.pyz | cut -f1))"

pyz-nodeps: venv
	@mkdir -p dist
	$(PY) -m shiv --quiet --no-deps -c ghga-cli -p "/usr/bin/env python3" -o dist/ghga-cli-nodeps.pyz . 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	@echo "built dist/ghga-cli-nodeps.pyz (needs pycurl installed in the Python that runs it)"

pyz-all: venv
	$(PY) build/pyz_all.py --run

dist: venv
	rm -f dist/ghga_cli-*
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/ghga_cli-*

package-lambda: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash build/package_lambda.sh build/out/lambda
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH PKG_FORMAT=terraform bash build/package_lambda.sh build/out/lambda-tf

CEPH_STORE ?=
ceph-up:
	bash build/ceph-up.sh $(CEPH_STORE)

ceph-down:
	bash build/ceph-down.sh

ceph-test: venv
	CEPH_REQUIRED=1 $(PY) -m pytest -m ceph $(PYTEST_ARGS)

# A local PostgreSQL for `make stack DB=postgres` and the tests (PG_DIR, PG_PORT: see the script).
pg-up:
	bash build/pg-up.sh

pg-down:
	bash build/pg-down.sh

# Benchmarks: bench tools in their own venv (bench/.venv), the "before" client of BASELINE_REV in
# bench/.baseline-venv (run beside the current one; BASELINE_CLI= leaves it out), Ceph with room
# for the growth step. bench/NOTES.md says how long it takes and how much disk it needs.
BASELINE_REV ?= e572fae
BASELINE_VENV := bench/.baseline-venv
BASELINE_CLI ?= $(BASELINE_VENV)/bin/ghga-cli

$(BASELINE_VENV)/bin/ghga-cli:
	bash bench/build_baseline.sh $(BASELINE_REV) $(BASELINE_VENV)

bench-baseline:
	bash bench/build_baseline.sh $(BASELINE_REV) $(BASELINE_VENV)

bench-tools:
	@command -v socat >/dev/null && test -x /usr/bin/time || apt-get install -y -q socat time
	@test -x bench/.venv/bin/python || $(PYTHON) -m venv bench/.venv
	bench/.venv/bin/pip install $(PIP_QUIET) -r requirements/bench.txt 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0

bench: venv bench-tools $(BASELINE_CLI)
	CEPH_BLOCK_SIZE=$${CEPH_BLOCK_SIZE:-56G} bash build/ceph-up.sh $(CEPH_STORE)
	$(PY) bench/suite.py $(if $(BASELINE_CLI),--baseline-cli $(BASELINE_CLI)) $(BENCH_ARGS)

FUZZ_EXAMPLES ?= 30
fuzz: venv
	$(PY) -m tests.fuzz.run_fuzz --max-examples $(FUZZ_EXAMPLES)

# Long reliability runs (short versions of each run inside `make test`); see docs/RELIABILITY.md.
reliability-faults: venv
	$(PY) -m tests.reliability.fault_series --runs 40 --rate 0.2 --seed 1

reliability-crash: venv
	$(PY) -m tests.reliability.crash_series --uploads 20 --downloads 20 --restarts 5

reliability-load: venv
	$(PY) -m tests.reliability.load --clients 16 --seconds 300

clean:
	rm -rf dist build/out vendor .stack .pytest_cache .ruff_cache
