#!/usr/bin/env bash
# Print the directory holding the Gateway API standard-channel CRDs at the pinned version
# (GATEWAY_API_VERSION in hack/versions.env), fetching the published module sigs.k8s.io/gateway-api with the
# ordinary `go` client from the Go module proxy. The module lands in the Go module cache (~/go/pkg/mod) like
# every other pinned build input, so it is downloaded once; later calls only print the path.
#
# The integration tests (tests/integration/test_gateway_api.py) install HTTPRoute and its parents' CRDs from
# here to validate the HTTPRoutes Kultivar writes against the real schema and CEL rules.
#
# Usage: hack/gateway-api-crds.sh [version]   (default: $GATEWAY_API_VERSION)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
version=${1:-$GATEWAY_API_VERSION}
module=sigs.k8s.io/gateway-api

export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export GOMODCACHE=${GOMODCACHE:-$HOME/go/pkg/mod}

crds=$GOMODCACHE/$module@$version/config/crd/standard
if [ ! -f "$crds/gateway.networking.k8s.io_httproutes.yaml" ]; then
  # Outside any go.mod, so nothing else is resolved or downloaded.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  dir=$(cd "$work" && go mod download -json "$module@$version" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if info.get("Error") or not info.get("Dir"):
    sys.exit("go mod download %s@%s: %s" % (info.get("Path"), info.get("Version"), info.get("Error", "no Dir")))
print(info["Dir"])')
  crds=$dir/config/crd/standard
fi
[ -f "$crds/gateway.networking.k8s.io_httproutes.yaml" ] || { echo "no HTTPRoute CRD in $crds" >&2; exit 1; }
echo "$crds"
