# Container images without Docker or a registry (hack/build-images.sh): debootstrap + Debian's python3 + umoci,
# as OCI archives in ~/.cache/kultivar/images, then imported into containerd with ctr.
# Included from the main Makefile.
#
#   make images          build kultivar-runtime, kultivar-operator and kultivar-pause :<pyproject version>
#                        (root; cold ~3 min on 2 cores, a source change ~15-30 s, nothing changed <1 s)
#   make images-import   import them into containerd (CONTAINERD_ADDRESS, default the local real node's socket;
#                        ~25 s the first time, seconds after a source change, skipped when already there)
#   make images-check    fail if images/*.Dockerfile drift from hack/versions.env
#   make images-refs     print "<reference> <archive>" per image

IMAGES_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
# The local real node's containerd (kultivar.devcluster.node); a system containerd is /run/containerd/containerd.sock.
CONTAINERD_ADDRESS ?= /run/kultivar/containerd.sock

.PHONY: images images-import images-check images-refs

images: images-check
	$(IMAGES_MK_DIR)/build-images.sh build

images-import: images
	$(IMAGES_MK_DIR)/build-images.sh import --address $(CONTAINERD_ADDRESS)

images-check:
	$(IMAGES_MK_DIR)/build-images.sh check

images-refs:
	@$(IMAGES_MK_DIR)/build-images.sh refs
