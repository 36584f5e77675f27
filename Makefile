.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE ?= $(or $(MODELDEPLOY_CACHE),$(HOME)/.cache/modeldeploy)
include hack/cluster/versions.env
HELM := $(CACHE)/bin/helm-$(HELM_VERSION)
CLUSTER := $(BIN)/python -m localcluster
CHART := charts/modeldeploy-operator
CRD_FILE := modeldeploy.dev_modeldeployments.yaml
PYTEST ?= $(BIN)/pytest

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: setup
setup: $(VENV)/.installed ## Create .venv and install the project, the bento tooling and the dev tools (locked)

$(VENV)/.installed: pyproject.toml requirements/lock.txt hack/cluster/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint requirements/lock.txt --editable '.[bento,dev]'
	$(BIN)/pip install --quiet --no-deps --editable hack/cluster
	touch $@

.PHONY: system-packages
system-packages: ## Install the Debian packages the local cluster and image builds need (only what is missing)
	@bash hack/system-packages.sh
	@command -v go >/dev/null || { echo "the local cluster is built with Go (>= 1.26): install it first" >&2; exit 1; }

.PHONY: lock
lock: ## Re-lock the dependencies after changing pyproject.toml or requirements/bento-runtime.in
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet '.[bento,dev]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^modeldeploy' > requirements/lock.txt
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -r requirements/bento-runtime.in
	.venv-lock/bin/pip freeze > requirements/bento-runtime.txt
	rm -rf .venv-lock

.PHONY: crds
crds: setup ## Regenerate the CRD from the API types into crds/ and the chart
	$(BIN)/modeldeploy crd > crds/$(CRD_FILE)
	cp crds/$(CRD_FILE) $(CHART)/crds/$(CRD_FILE)

.PHONY: check
check: setup $(HELM) ## Lint, format check, mypy strict, layer contracts, CRD drift, helm lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/modeldeploy crd | diff -u crds/$(CRD_FILE) - || { echo "crds/ is stale: run make crds"; exit 1; }
	diff -u crds/$(CRD_FILE) $(CHART)/crds/$(CRD_FILE) || { echo "the chart's CRD is stale: run make crds"; exit 1; }
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set 'watchNamespaces={ml,staging}'
	@# Every tier collects together, as make test does (two test files with one basename do not).
	$(PYTEST) --collect-only -q >/dev/null || { $(PYTEST) --collect-only -q | tail -20; exit 1; }

##@ Tests

.PHONY: test
test: setup system-packages cluster-build ## Every test tier: unit, bento, cluster (kwok nodes) and e2e (the real node)
	$(PYTEST)

.PHONY: test-unit
test-unit: setup ## Unit tier only: pure functions, schemas, renderers, a real `bentoml serve`
	$(PYTEST) -m "unit or bento"

.PHONY: test-cluster
test-cluster: setup system-packages cluster-build ## Cluster tier only, on the local control plane (binaries built first)
	$(PYTEST) -m cluster

.PHONY: test-e2e
test-e2e: setup system-packages cluster-build ## e2e tier only: the local real node (or MODELDEPLOY_CLUSTER=kind|existing)
	$(PYTEST) -m e2e

.PHONY: chaos
chaos: setup system-packages cluster-build ## Faults at random moments of canary walks: 20 operator kills, 5 API-server and 1 etcd restarts (own cluster)
	$(BIN)/python benchmarks/chaos.py

.PHONY: bench
bench: setup system-packages cluster-build ## Benchmarks, printing figures against targets and floors (not part of make test; ~35 min)
	@# Both run; the exit status says whether every target was met.
	$(BIN)/python benchmarks/bench.py; scale=$$?; $(BIN)/python benchmarks/rollback.py && exit $$scale

##@ Local cluster

$(HELM):
	hack/cluster/build.sh helm

.PHONY: cluster-build
cluster-build: ## Build every binary of the local cluster and its add-ons from the Go module proxy (cached by version)
	@# One build.sh for all, so that packages shared by components (client-go...) compile once; the test targets
	@# depend on it, and a warm run only checks that the cached binaries are there.
	hack/cluster/build.sh

.PHONY: cluster-up
cluster-up: setup system-packages ## Start etcd, kube-apiserver, controller-manager, scheduler and kwok nodes on loopback
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: setup ## Stop the local cluster's processes
	$(CLUSTER) down

.PHONY: up
up: setup system-packages ## Local cluster + helm install + operator + the iris sample, until Ready
	$(BIN)/python hack/up.py up

.PHONY: down
down: setup ## Stop the operator and the local cluster
	$(BIN)/python hack/up.py down

.PHONY: demo
demo: setup ## After make up: a canary of iris judged on real metrics (bentoml serve + Prometheus), promoted
	$(BIN)/python hack/demo.py

.PHONY: demo-rollback
demo-rollback: setup ## After make up: the same with a canary failing 30% of requests, rolled back
	$(BIN)/python hack/demo.py --fail-rate 0.3

.PHONY: bento
bento: setup ## Train and build the iris-classifier bento (bentos/iris-classifier)
	$(BIN)/python bentos/build.py
