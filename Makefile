# Two commands matter: `make demo` (the DAG end to end on the local edge stack) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
STACK_ENV := .devstack/stack.env
PARTITION ?=

export AIRFLOW_HOME := $(CURDIR)/.devstack/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins

.PHONY: install lock stack-up stack-status stack-down seed test test-unit faults bench demo demo-down clean

install: $(STAMP)

# Re-installs only when the lock or the package metadata changed; a second run is a no-op.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync -q --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	touch $(STAMP)

lock:
	$(VENV)/bin/uv pip compile -q --python 3.11 --generate-hashes requirements-dev.txt -o requirements.lock

stack-up: install
	$(PY) -m devstack up

stack-status: install
	$(PY) -m devstack status

# Stops the demo's Airflow too, then every stack service that stack-up started (by pid).
stack-down:
	test -x $(PY) && $(PY) -m devstack.demo down || true
	test -x $(PY) && $(PY) -m devstack.scale down || true
	test -x $(PY) && $(PY) -m devstack down || true

seed: stack-up
	$(PY) -m devstack.seed

test-unit: install
	$(PY) -m pytest tests/unit -q

# Brings the stack up, runs the whole suite, and always stops what it started.
test: install
	EDGE_TEST_COMMAND="make test" bash devstack/run-tests.sh

# The reliability and security battery alone: faults injected through the real scheduler, triggerer and
# executor, bad inputs through the DAG, security scans. Writes tests/faults/results.json (make test runs it too).
faults: install
	EDGE_TEST_COMMAND="make faults" bash devstack/run-tests.sh tests/faults

# Benchmarks against their floors, on the local edge stack: each writes bench/results/<name>.json and
# bench/README.md is generated from those files. Fails if a benchmark fails or misses its target.
BENCHMARKS := aml_double validation image_rebuild overhead training_page triggerer backfill
bench: stack-up
	status=0; for name in $(BENCHMARKS); do rm -f bench/results/$$name.json; $(PY) bench/$$name.py || status=1; done; \
	$(PY) bench/report.py || status=1; exit $$status

demo: install
	$(PY) -m devstack.demo up $(PARTITION)

demo-down:
	test -x $(PY) && $(PY) -m devstack.demo down || true

clean: stack-down
	rm -rf .devstack
