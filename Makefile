# One entry point for developers and CI. Everything installs itself on first use
# (devcluster/env/bootstrap.sh) into $(TROP_CACHE), outside the checkout.
SHELL := /bin/bash
export TROP_CACHE ?= /var/cache/traceroute-operator
# One venv per checkout when several work side by side (each editable install points at
# its own checkout, and pods run the venv's console scripts).
export TROP_VENV ?= $(TROP_CACHE)/venv
VENV := $(TROP_VENV)
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)

.PHONY: env lint test test-fast demo demo-once bench bench-probe bench-operator bench-scale env-up env-down clean-lab chart

env:
	bash devcluster/env/bootstrap.sh

lint: env
	$(PY) -m ruff check probe operator devcluster hack tests
	$(PY) -m ruff format --check probe operator devcluster hack tests
	$(PY) -m mypy

# Every test: the fast layer and the real-component layer (control plane,
# Pushgateway + Prometheus, network lab). Needs root for network namespaces.
test: env lint
	$(PY) -m pytest tests

# Pure functions only: no cluster, no lab, no root.
test-fast:
	$(PY) -m pytest -m "not slow" tests

# The demo on a cluster with two real nodes; Ctrl-C tears it down.
demo: env
	$(PY) -m devcluster demo

# The same demo to its last step (the alert fired), then teardown and exit 0 (tests, CI).
demo-once: env
	$(PY) -m devcluster demo --once

bench: bench-probe bench-operator

bench-probe: env
	bash devcluster/env/install-trippy.sh
	$(PY) -m devcluster.bench.probe $(BENCH_ARGS)

bench-operator: env
	$(PY) -m devcluster.bench.operator

# One Pushgateway + Prometheus with 1000 and 5000 probes at */5, old and new settings
# (~10 min; BENCH_SCALE_ARGS="--quick" for a one-minute smoke run).
bench-scale: env
	$(PY) -m devcluster.bench.scale $(BENCH_SCALE_ARGS)

# Start/stop the real test environment by hand (see README).
env-up: env
	$(PY) -m devcluster up

env-down:
	$(PY) -m devcluster down

# Remove every lab namespace, process and bridge a crashed run left behind.
clean-lab:
	$(PY) -m devcluster cleanup

# Refresh the chart's generated files: its copy of crds/tracerouteprobes.yaml,
# values.schema.json and the README values table (a test fails when they are stale).
chart:
	$(PY) -m hack.chartgen write
