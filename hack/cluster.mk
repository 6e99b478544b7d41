# Local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) on 127.0.0.1.
# Included from the main Makefile, which defines PY ?= .venv/bin/python.
#
#   make cluster-binaries   build the pinned binaries into ~/.cache/kultivar (once; cold ~20-40 min)
#   make cluster-up         start the cluster detached; prints KUBECONFIG=<path> last
#   make cluster-status     show each component
#   make cluster-down       stop it (from the PID files in the state directory)
#
# The state directory is $KULTIVAR_CLUSTER_DIR, default ~/.cache/kultivar/cluster.

PY ?= .venv/bin/python
CLUSTER_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

.PHONY: cluster-binaries cluster-up cluster-down cluster-status

cluster-binaries:
	$(CLUSTER_MK_DIR)/build-k8s.sh control-plane

cluster-up: cluster-binaries
	$(PY) -m kultivar.devcluster up

cluster-down:
	$(PY) -m kultivar.devcluster down

cluster-status:
	$(PY) -m kultivar.devcluster status

.PHONY: dev
dev:
	$(PY) -m kultivar.devcluster dev
