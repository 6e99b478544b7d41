#!/usr/bin/env bash
# Debian packages `make demo` and `make e2e` need, installed only when missing:
#   images (always):       debootstrap, umoci, gcc + static libc (the pause binary)
#   a local real node:     containerd, runc, the CNI plugins, iptables, iproute2
#                          (skipped when KUBECONFIG names another cluster: the demo then uses that one)
set -euo pipefail

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v umoci >/dev/null || need+=(umoci)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/libc.a ] || need+=(libc6-dev)
if [ -n "${KUBECONFIG:-}" ] && [ -f "${KUBECONFIG%%:*}" ]; then
  echo "[node-deps] KUBECONFIG is set: the demo uses that cluster, no local node packages needed" >&2
else
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v ip >/dev/null || need+=(iproute2)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[node-deps] these Debian packages are missing: ${need[*]}; building images and a local node needs root" >&2
  echo "[node-deps] run as root, or point KUBECONFIG at a cluster (e.g. kind) and install ${need[*]} yourself" >&2
  exit 1
fi
echo "[node-deps] apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
