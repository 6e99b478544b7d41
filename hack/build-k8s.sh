#!/usr/bin/env bash
# Build the pinned Kubernetes components the local cluster runs, from published Go modules.
#
# There is no Docker engine and no release download here, so every binary is compiled with the ordinary
# `go` client from the Go module proxy into a cache under $HOME. A binary already present at the pinned
# version is never rebuilt; the Go module and build caches stay in $HOME so a rebuild is incremental.
#
# Usage: hack/build-k8s.sh [control-plane|node|all]   (default: control-plane)
#   control-plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
#   node:          kubelet, kube-proxy (a real node; issue "A real node")
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
what=${1:-control-plane}

cache=${KULTIVAR_CACHE:-$HOME/.cache/kultivar}
k8s_bin=$cache/k8s/$K8S_VERSION/bin
etcd_bin=$cache/etcd/$ETCD_VERSION/bin
kwok_bin=$cache/kwok/$KWOK_VERSION/bin
mkdir -p "$k8s_bin" "$etcd_bin" "$kwok_bin"

export GOTOOLCHAIN=local
export GOMODCACHE=${GOMODCACHE:-$HOME/go/pkg/mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
export CGO_ENABLED=0
export GOFLAGS=-mod=mod

log() { printf '[build-k8s %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# has_version BINARY EXPECTED: the binary exists and its --version output mentions EXPECTED.
has_version() {
  local flag=--version
  [ "$(basename "$1")" = kubectl ] && flag="version --client"
  # shellcheck disable=SC2086
  [ -x "$1" ] && "$1" $flag 2>/dev/null | grep -q -- "$2"
}

build_kubernetes() {
  local cmds=("$@") missing=() c
  for c in "${cmds[@]}"; do
    has_version "$k8s_bin/$c" "$K8S_VERSION" || missing+=("$c")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "kubernetes $K8S_VERSION: ${cmds[*]} already built"
    return
  fi
  log "kubernetes $K8S_VERSION: building ${missing[*]} (cold: ~7-10 min on 2 cores; warm: a few minutes)"

  # k8s.io/kubernetes is not meant to be consumed as a module: it requires its staging modules at v0.0.0
  # and replaces them with ./staging paths. A throw-away wrapper module replaces each with its published
  # v0.<minor>.<patch> tag instead; the list comes from the downloaded go.mod so it stays right per version.
  local src=$cache/k8s/$K8S_VERSION/src
  mkdir -p "$src"
  local gomod
  gomod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local staging_version=v0.${K8S_VERSION#v1.}
  local go_line godebug_line
  go_line=$(grep -m1 '^go ' "$gomod")
  godebug_line=$(grep -m1 '^godebug ' "$gomod" || true)
  {
    echo "module kultivar.local/k8s-build"
    echo
    echo "$go_line"
    [ -n "$godebug_line" ] && echo "$godebug_line"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
  } >"$src/go.mod"
  rm -f "$src/go.sum"
  local mods
  # Upstream replaces exactly its staging modules with ./staging/src/<module>: those are the ones to pin.
  mods=$(grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u)
  [ -n "$mods" ] || { log "no staging modules found in $gomod"; exit 1; }
  local args=() m
  for m in $mods; do args+=(-replace "$m=$m@$staging_version"); done
  (cd "$src" && go mod edit "${args[@]}" -require "google.golang.org/protobuf@$PROTOBUF_VERSION")
  log "wrapper module: $(echo "$mods" | wc -l) staging modules replaced with $staging_version"

  local v=$K8S_VERSION minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local date ld="-s -w" pkg
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  local pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  local tmp=$src/out
  mkdir -p "$tmp"
  (cd "$src" && go build -p "$(nproc)" -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$tmp/" "${pkgs[@]}")
  for c in "${missing[@]}"; do mv -f "$tmp/$c" "$k8s_bin/$c"; done
  log "kubernetes: built ${missing[*]} into $k8s_bin"
}

build_etcd() {
  if has_version "$etcd_bin/etcd" "${ETCD_VERSION#v}"; then
    log "etcd $ETCD_VERSION already built"
    return
  fi
  log "etcd $ETCD_VERSION: building"
  # etcd's server module carries replace directives, so `go install` refuses it; a wrapper that merely
  # requires it needs no replaces (a dependency's replaces are ignored) and keeps etcd's graph separate.
  local src=$cache/etcd/$ETCD_VERSION/src
  mkdir -p "$src"
  printf 'module kultivar.local/etcd-build\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$src/go.mod"
  rm -f "$src/go.sum"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$src/etcd" go.etcd.io/etcd/server/v3 && mv -f "$src/etcd" "$etcd_bin/etcd")
  log "etcd: built into $etcd_bin"
}

build_kwok() {
  if has_version "$kwok_bin/kwok" "$KWOK_VERSION"; then
    log "kwok $KWOK_VERSION already built"
    return
  fi
  log "kwok $KWOK_VERSION: building"
  GOFLAGS= GOBIN=$kwok_bin go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "kwok: built into $kwok_bin"
}

case "$what" in
  control-plane)
    build_etcd
    build_kwok
    build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
    ;;
  node)
    build_kubernetes kubelet kube-proxy
    ;;
  all)
    build_etcd
    build_kwok
    build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
    ;;
  *)
    echo "usage: $0 [control-plane|node|all]" >&2
    exit 2
    ;;
esac
