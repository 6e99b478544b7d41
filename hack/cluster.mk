# Local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) on 127.0.0.1.
# Included from the main Makefile, which defines PY ?= .venv/bin/python.
#
#   make cluster-binaries   build the pinned binaries into ~/.cache/kultivar (once; cold ~20-40 min)
#   make cluster-up         start the cluster detached; prints KUBECONFIG=<path> last
#   make cluster-up NODE=real   the same with a real node (containerd, kubelet, kube-proxy; root)
#   make cluster-status     show each component
#   make cluster-down       stop it (from the PID files in the state directory)
#
# The state directory is $KULTIVAR_CLUSTER_DIR, default ~/.cache/kultivar/cluster.

PY ?= .venv/bin/python
CLUSTER_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

NODE ?= kwok

.PHONY: cluster-binaries node-binaries node-deps cluster-up cluster-down cluster-status

cluster-binaries:
	$(CLUSTER_MK_DIR)/build-k8s.sh control-plane

# kubelet and kube-proxy (a real node); the Debian packages it and the image build need.
node-binaries:
	$(CLUSTER_MK_DIR)/build-k8s.sh node

node-deps:
	$(CLUSTER_MK_DIR)/node-deps.sh

cluster-up: cluster-binaries $(if $(filter real,$(NODE)),node-binaries node-deps)
	$(PY) -m kultivar.devcluster up --node $(NODE)

cluster-down:
	$(PY) -m kultivar.devcluster down

cluster-status:
	$(PY) -m kultivar.devcluster status

.PHONY: dev
dev:
	$(PY) -m kultivar.devcluster dev
