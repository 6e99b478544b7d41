#!/usr/bin/env bash
# Build the pinned chart tools from published Go modules: helm, and kube-score (the manifest linter).
#
# Like hack/build-k8s.sh: no Docker, no release downloads. Every binary is compiled with the ordinary `go`
# client from the Go module proxy into ~/.cache/kultivar/<tool>/<version>/bin and never rebuilt while the
# pinned version is present. The Go module and build caches stay in $HOME so a rebuild is incremental.
#
# Why kube-score and not kube-linter: kube-linter's module (golang.stackrox.io/kube-linter, and its
# github.com/stackrox/kube-linter source path) is refused by the Go module proxy this project builds from
# ("module host not permitted" / "not available"), and it is on no other registry we reach. kube-score
# (github.com/zegl/kube-score) checks the same ground: security contexts, probes, resources, network
# policies, image tags, PodDisruptionBudgets, with per-object `kube-score/ignore` annotations for exceptions.
#
# Usage: hack/build-tools.sh [helm|kube-score|all]   (default: all)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
what=${1:-all}

cache=${KULTIVAR_CACHE:-$HOME/.cache/kultivar}

export GOTOOLCHAIN=local
export GOMODCACHE=${GOMODCACHE:-$HOME/go/pkg/mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
export CGO_ENABLED=0

log() { printf '[build-tools %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# has_version BINARY EXPECTED ARGS...: the binary exists and `BINARY ARGS...` mentions EXPECTED.
has_version() {
  local bin=$1 expected=$2
  shift 2
  [ -x "$bin" ] && "$bin" "$@" 2>/dev/null | grep -q -- "$expected"
}

build_helm() {
  local bin=$cache/helm/$HELM_VERSION/bin
  if has_version "$bin/helm" "$HELM_VERSION" version --short; then
    log "helm $HELM_VERSION already built"
    return
  fi
  mkdir -p "$bin"
  log "helm $HELM_VERSION: building (cold: ~5-10 min on 2 cores)"
  local began=$SECONDS
  # helm's go.mod has no replace directives, so `go install module@version` builds it as published.
  # The variables are the ones helm's own Makefile sets: its version, and the Kubernetes version that
  # `helm template`/`lint` assume (without it, 1.20, and a chart's kubeVersion: >=1.30 fails to render).
  # Like the Makefile, that is the client-go minor helm is built with (v0.N.x -> 1.N).
  local gomod client_go minor
  gomod=$(GOFLAGS= go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")
  minor=${client_go#v0.}
  minor=${minor%%.*}
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  GOFLAGS= GOBIN=$bin go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  log "helm: built into $bin in $((SECONDS - began))s"
}

build_kube_score() {
  local bin=$cache/kube-score/$KUBE_SCORE_VERSION/bin
  if has_version "$bin/kube-score" "${KUBE_SCORE_VERSION#v}" version; then
    log "kube-score $KUBE_SCORE_VERSION already built"
    return
  fi
  mkdir -p "$bin"
  log "kube-score $KUBE_SCORE_VERSION: building (cold: ~1-3 min)"
  local began=$SECONDS
  GOFLAGS= GOBIN=$bin go install -trimpath \
    -ldflags "-s -w -X main.version=${KUBE_SCORE_VERSION#v} -X main.commit=release -X main.date=release" \
    "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
  log "kube-score: built into $bin in $((SECONDS - began))s"
}

case "$what" in
  helm) build_helm ;;
  kube-score) build_kube_score ;;
  all)
    build_helm
    build_kube_score
    ;;
  *)
    echo "usage: $0 [helm|kube-score|all]" >&2
    exit 2
    ;;
esac
