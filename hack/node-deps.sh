#!/usr/bin/env bash
# Debian packages a real local node needs: containerd, runc, the CNI plugins, iptables, iproute2.
# Installs only what is missing; a no-op when KUBECONFIG names another cluster (the demo then uses it).
set -euo pipefail

if [ -n "${KUBECONFIG:-}" ] && [ -f "${KUBECONFIG%%:*}" ]; then
  echo "[node-deps] KUBECONFIG is set: the demo uses that cluster, no local node packages needed" >&2
  exit 0
fi
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[node-deps] a local node needs root and these packages: ${need[*]}" >&2
  echo "[node-deps] run as root, or point KUBECONFIG at a cluster (e.g. kind) and run make demo again" >&2
  exit 1
fi
echo "[node-deps] apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
