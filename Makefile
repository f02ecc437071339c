# The two commands of the quick start: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed
ARGS ?=

.PHONY: run test check unit e2e bench crds manifests assets system clean

$(INSTALLED): pyproject.toml constraints.txt
	bash hack/ensure-system.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The Kubernetes binaries, built once into ~/.cache/tenant-operator (skipped with KUBE_ASSETS or KUBECONFIG).
assets: $(INSTALLED)
	@if [ -z "$$KUBE_ASSETS" ] && [ -z "$$KUBECONFIG" ]; then bash hack/build-assets.sh >/dev/null; fi

## Local control plane + PostgreSQL + operator + samples; `make run ARGS=--once` exits when Ready.
run: assets
	$(VENV)/bin/tenant-operator dev $(ARGS)

## Every test: the code's own checks, unit, then end-to-end against the real API server and PostgreSQL.
test: assets check
	$(VENV)/bin/pytest $(ARGS)

## The layer contract (import-linter), types (mypy) and lint (ruff); configuration in pyproject.toml.
check: $(INSTALLED)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff check operator tests bench hack examples

unit: $(INSTALLED)
	$(VENV)/bin/pytest tests/unit $(ARGS)

## The benchmarks at the sizes the README quotes (about 45 minutes); figures in bench/results/.
bench: assets
	$(VENV)/bin/python bench/provision.py --tenants 100 1000 --isolated-fraction 0 0.1 --runs 3
	$(VENV)/bin/python bench/idle.py --tenants 1000 --seconds 300
	$(VENV)/bin/python bench/migration.py --megabytes 100 1000 --runs 3

crds: $(INSTALLED)
	$(VENV)/bin/tenant-operator crds --output crds

## The chart's and manifests/' copies of the CRDs and owners' role, after a change to either.
manifests: crds assets
	$(VENV)/bin/python hack/sync-manifests.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
