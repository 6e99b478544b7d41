# Chart tools (helm, kube-score) built from pinned Go modules, the chart's lint, and the rendered manifests.
# Included from the main Makefile, which defines PY ?= .venv/bin/python.
#
#   make tools        build helm and kube-score into ~/.cache/kultivar (once; cold ~6 min, then seconds)
#   make chart-lint   helm lint --strict (default and all-options values) and kube-score on the rendered chart
#   make manifests    generate the Argo CD Lua progress tables from domain/reasons.py, then render
#                     manifests/install.yaml and manifests/argocd-health.yaml from the chart
#   make manifests-check   fail if those are stale

PY ?= .venv/bin/python
TOOLS_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
TOOLS_CACHE ?= $(or $(KULTIVAR_CACHE),$(HOME)/.cache/kultivar)
HELM_VERSION := $(shell sed -n 's/^HELM_VERSION=//p' $(TOOLS_MK_DIR)/versions.env)
KUBE_SCORE_VERSION := $(shell sed -n 's/^KUBE_SCORE_VERSION=//p' $(TOOLS_MK_DIR)/versions.env)
HELM := $(TOOLS_CACHE)/helm/$(HELM_VERSION)/bin/helm
KUBE_SCORE := $(TOOLS_CACHE)/kube-score/$(KUBE_SCORE_VERSION)/bin/kube-score
CHART := charts/kultivar
# Every option that adds objects, so that the lint sees all of them.
CHART_ALL_ON := --set replicas=2 --set peering.enabled=true --set networkPolicy.enabled=true \
	--set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
	--set grafanaDashboard.enabled=true --set 'artifactStore.pvc.create.namespaces={team-a}'
KUBE_SCORE_FLAGS := --enable-optional-test container-seccomp-profile --enable-optional-test container-ports-check

.PHONY: tools chart-lint manifests manifests-check

tools:
	$(TOOLS_MK_DIR)/build-tools.sh all

chart-lint: tools
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) $(CHART_ALL_ON)
	$(HELM) lint --strict $(CHART) --set 'watchNamespaces={team-a,team-b}' --set artifactStore.type=s3 \
		--set artifactStore.s3.url=s3://bucket/kultivar --set artifactStore.s3.secretName=store
	$(HELM) template kultivar $(CHART) --namespace kultivar-system | $(KUBE_SCORE) score $(KUBE_SCORE_FLAGS) -
	$(HELM) template kultivar $(CHART) --namespace kultivar-system $(CHART_ALL_ON) | \
		$(KUBE_SCORE) score $(KUBE_SCORE_FLAGS) -

manifests: tools
	$(PY) $(TOOLS_MK_DIR)/manifests.py

manifests-check: tools
	$(PY) $(TOOLS_MK_DIR)/manifests.py --check
