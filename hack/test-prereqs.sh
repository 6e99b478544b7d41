#!/usr/bin/env bash
# What `make test` needs besides Python and the Go-built binaries (those come from make targets): Debian's
# prometheus package (promtool checks every metric we export; its server backs the metricsSource tests) and its
# chromium package (the page `kubectl kultivar report` writes is opened in headless Chromium by a unit test).
# Installs what is missing when run as root; otherwise stops at once, naming the package and the command.
set -euo pipefail

missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v go >/dev/null || { echo "test-prereqs: go is missing (the control plane and the Gateway API CRDs are built with it): install Go >= 1.24 and put it on PATH" >&2; exit 1; }

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test-prereqs: missing Debian packages: ${missing[*]}" >&2
    echo "  install them with:  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "test-prereqs: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "test-prereqs: promtool $(promtool --version 2>&1 | sed -n '1s/.*version \([^ ]*\).*/\1/p'), $(chromium --version 2>/dev/null | sed -n '1s/^\(Chromium [^ ]*\).*/\1/p'), go $(go env GOVERSION)" >&2
