# Kultivar's front door. `make test` is the README's test command and what CI runs.
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip

.PHONY: help venv install test test-prereqs check unit integration chaos e2e lint crds crds-check bench demo clean

help:
	@echo "make install      create .venv and install Kultivar with test and lint extras (pinned by constraints.txt)"
	@echo "make test         everything CI checks: installs what the tests need, lint, generated files, the chart,"
	@echo "                  unit tests, then integration tests on a real local control plane (builds it if needed)"
	@echo "make unit         unit tests only (no cluster)"
	@echo "make integration  integration tests only"
	@echo "make chaos        the chaos tier: lifecycles while the operator is SIGKILLed and the API server restarts"
	@echo "make lint         ruff, mypy and the import-layer contracts"
	@echo "make crds         regenerate crds/ and the chart's CRD templates from the models"
	@echo "make cluster-up   start the local control plane; prints KUBECONFIG=... last"
	@echo "make cluster-down stop it"
	@echo "make demo         the whole loop on a real node (root) or on the cluster KUBECONFIG names"
	@echo "make e2e          the demo's scenario as a test on a fresh local real node (root)"

venv: $(PY)
$(PY):
	python3 -m venv .venv
	$(PIP) install -q --upgrade "pip>=24"

install: venv
	$(PIP) install -q -c constraints.txt -e '.[test,lint,s3,bench]'

# The README's test command and CI's: the same suite on a developer's machine and in CI. Every prerequisite is
# installed or built first (or the run stops at once, naming it), so no test is skipped for a missing tool.
test: install test-prereqs cluster-binaries tools check
	$(PY) -m pytest tests/unit tests/integration
	$(PY) -m pytest -m chaos tests/chaos

# Debian's prometheus (promtool and the server; installed when root, else the command is printed) and go.
test-prereqs:
	hack/test-prereqs.sh

# Static checks: lint, generated CRDs, the chart's lint and its rendered manifests.
check: lint crds-check chart-lint manifests-check

unit:
	$(PY) -m pytest tests/unit

integration: cluster-binaries
	$(PY) -m pytest tests/integration

# Its own pytest run (its own cluster): seeded chaos, the seed in the report header (KULTIVAR_CHAOS_SEED replays).
chaos: cluster-binaries
	$(PY) -m pytest -m chaos tests/chaos

lint:
	$(PY) -m ruff check operator tests bench
	$(PY) -m mypy
	.venv/bin/lint-imports

crds:
	$(PY) -m kultivar.api.crdgen

crds-check:
	$(PY) -m kultivar.api.crdgen --check

# The whole loop for real: builds what it needs (binaries, images, helm) with progress, then follows it.
demo: install node-deps
	$(PY) -m kultivar.devcluster.demo

e2e: install cluster-binaries node-binaries node-deps
	$(PY) -m pytest -m e2e tests/e2e

bench:
	$(PY) bench/bench_training.py
	$(PY) bench/bench_serving.py
	$(PY) bench/bench_drift.py
	$(PY) bench/bench_feedback.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache

include hack/cluster.mk
include hack/tools.mk
include hack/images.mk
