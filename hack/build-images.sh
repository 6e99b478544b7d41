#!/usr/bin/env bash
# Build Kultivar's container images without Docker and without a registry, and import them into containerd.
#
#   kultivar-runtime:<version>   every workload pod: `kultivar validate|train|serve|...`
#   kultivar-operator:<version>  the operator: `kultivar operator`
#   kultivar-pause:<version>     the pod sandbox image (containerd's sandbox_image): upstream's pause.c, static
#
# <version> is pyproject's version, which is also the chart's appVersion, so the chart's default references
# (`kultivar-operator:<appVersion>`, `kultivar-runtime:<appVersion>`) name exactly these images; no values needed.
# containerd's CRI normalises a bare `kultivar-runtime:0.1.0` to `docker.io/library/kultivar-runtime:0.1.0`, so
# that full name is what each archive carries (annotation io.containerd.image.name) and what `import` creates.
# `latest` is never used (kubelet would default it to imagePullPolicy: Always, which needs a registry).
#
# How, mirroring images/*.Dockerfile: Debian's own python3 in a `debootstrap --variant=minbase` rootfs (release,
# mirrors, packages, Python and pip versions pinned in hack/versions.env, which the Dockerfiles follow too), a venv
# at /opt/kultivar filled from wheels only (-c constraints.txt) by a pip that is never left in the image, bytecode
# compiled, then umoci packs OCI images. Each layer is built in an overlay mount over the layers below it and
# cached under ~/.cache/kultivar/images, keyed by a hash of its inputs:
#   base   debootstrap rootfs + Debian packages           <- suite, mirrors, package list
#   deps   venv + kultivar's dependencies (both images)    <- base, pip, constraints.txt, pyproject's dependencies
#   serve  the serve, s3 and boosting extras (runtime only) <- deps, pyproject's extras
#   app    the kultivar wheel built from this checkout     <- pyproject.toml, README.md, operator/
# A source change rebuilds only the small app layer; with nothing changed nothing is rebuilt (seconds).
# Results: ~/.cache/kultivar/images/<name>-<version>.oci.tar, an OCI image layout holding one image, with a
# <archive>.json beside it (reference, manifest digest).
#
# Usage:
#   hack/build-images.sh [build] [runtime|operator|pause ...]   build (default: all three); needs root
#   hack/build-images.sh import [--address SOCKET] [--namespace NS]
#       `ctr images import` each archive into containerd (default /run/containerd/containerd.sock, k8s.io),
#       skipping images containerd already has at the same digest
#   hack/build-images.sh refs                print "<reference> <archive>" per image
#   hack/build-images.sh check               fail if images/*.Dockerfile's ARG defaults drift from versions.env
#   hack/build-images.sh clean               remove the image cache
# Building needs root (debootstrap, chroot, overlay mounts) and runs in a private mount namespace, so no mount
# outlives it. Set KULTIVAR_CACHE to move the cache (default ~/.cache/kultivar).
set -euo pipefail
umask 022

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache=${KULTIVAR_CACHE:-$HOME/.cache/kultivar}
top=$cache/images
oci=$top/oci
all_images=(runtime operator pause)
# Every file the layers are built from gets this mtime (1980-01-01, zip-safe), and bytecode is compiled against
# it, so layers do not depend on when they were built.
epoch=315532800
# Bump a recipe number when the way that layer is built changes, so its cached copies are rebuilt.
recipe_base=1 recipe_deps=1 recipe_app=1 recipe_pause=1 recipe_image=1

log() { printf '[build-images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
hash16() { sha256sum | cut -c1-16; }

# A host Python >= 3.11 (tomllib) reads pyproject.toml and JSON; the image's own Python is Debian's.
py=
for candidate in "$repo/.venv/bin/python" python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import tomllib' 2>/dev/null; then
    py=$candidate
    break
  fi
done
[ -n "$py" ] || die "needs a host Python >= 3.11 (python3 or $repo/.venv/bin/python) to read pyproject.toml"

# The Python steps of this script live in one testable file (tests/unit/test_image_oci.py).
oci_py() { "$py" "$here/images/oci.py" "$@"; }

version=$(oci_py version "$repo/pyproject.toml")
case "$version" in
  "" | latest) die "pyproject's version '$version' cannot be an image tag" ;;
esac

ref_of() { echo "docker.io/library/kultivar-$1:$version"; }
archive_of() { echo "$top/kultivar-$1-$version.oci.tar"; }

# ---------------------------------------------------------------------------------------------------------
# Mounts (all inside the private mount namespace `build` runs in; unmounted in reverse order on exit anyway).

mounts=()
do_mount() {
  mount "$@"
  mounts+=("${*: -1}")
}
umount_all() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"
  done
  mounts=()
}
trap umount_all EXIT

# safe_rm PATH...: rm -rf that refuses anything with a mount below it and never crosses file systems.
safe_rm() {
  local p
  for p in "$@"; do
    [ -e "$p" ] || continue
    if findmnt -rn -o TARGET | grep -- "^$(realpath "$p")\(/\|$\)" >/dev/null; then
      die "refusing to remove $p: something is mounted below it"
    fi
    rm -rf --one-file-system -- "$p"
  done
}

# prepare_root ROOT: /proc, a minimal /dev and a tmpfs /tmp in ROOT, like a container runtime would, so that
# nothing a build step does there touches the host's /dev or lands in a layer through /tmp.
prepare_root() {
  local root=$1 n
  do_mount -t proc proc "$root/proc"
  do_mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
  for n in null zero full random urandom tty; do
    touch "$root/dev/$n"
    do_mount --bind "/dev/$n" "$root/dev/$n"
  done
  mkdir "$root/dev/shm" "$root/dev/pts"
  do_mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  ln -s /proc/self/fd "$root/dev/fd"
  do_mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
}

# run_in ROOT [--userspec=U:G] CMD...: CMD in ROOT with a clean environment.
run_in() {
  local root=$1 user=()
  shift
  case "${1:-}" in --userspec=*)
    user=("$1")
    shift
    ;;
  esac
  chroot "${user[@]}" "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "$@"
}

# ---------------------------------------------------------------------------------------------------------
# OCI layout (one umoci layout holds every cached stage as a tag; the archives are exported from it).

# (`grep >/dev/null`, not `grep -q`: with pipefail, a grep that exits early fails the pipeline by SIGPIPE.)
oci_has() { [ -f "$oci/index.json" ] && umoci ls --layout "$oci" | grep -xF -- "$1" >/dev/null; }

# oci_add_layer PARENT_TAG|- NEW_TAG LAYER_TAR CREATED_BY
oci_add_layer() {
  local parent=$1 tag=$2 tar=$3 by=$4
  [ -f "$oci/index.json" ] || umoci init --layout "$oci"
  oci_has "$tag" && umoci rm --image "$oci:$tag"
  if [ "$parent" = - ]; then
    umoci new --image "$oci:$tag"
    umoci raw add-layer --image "$oci:$tag" --history.created_by "$by" "$tar"
  else
    umoci raw add-layer --image "$oci:$parent" --tag "$tag" --history.created_by "$by" "$tar"
  fi
}

# oci_gc: delete the layout's blobs no tag reaches (what `umoci gc` does, without re-hashing every blob: ~0.1 s
# instead of ~6 s here).
oci_gc() {
  oci_py gc "$oci"
}

# layer_tar DIR OUT: DIR's contents as an uncompressed layer, entries sorted, owners numeric, no atime/ctime.
layer_tar() {
  (cd "$1" && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z) |
    tar -C "$1" --create --file="$2" --null --no-recursion --verbatim-files-from --files-from=- \
      --format=pax --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
      --numeric-owner --no-acls --no-selinux --no-xattrs
}

# check_upper DIR: an overlay upper dir is a plain layer only without whiteouts, opaque dirs or redirects.
check_upper() {
  oci_py check-upper "$1"
}

# touch_new MERGED UPPER: give every file the build step created (those in UPPER) the fixed mtime, through the
# merged view (no copy-up: they are in UPPER already).
touch_new() {
  (cd "$2" && find . -mindepth 1 -print0) | (cd "$1" && xargs -0r touch -h -d "@$epoch" --)
}

# ---------------------------------------------------------------------------------------------------------
# Keys

deb_keyring=/usr/share/keyrings/debian-archive-keyring.gpg

write_sources() {
  cat <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: $deb_keyring

Types: deb
URIs: $DEBIAN_SECURITY_MIRROR
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: $deb_keyring
EOF
}

# What debian:<suite>-slim excludes (debuerreotype's slimify).
write_dpkg_excludes() {
  cat <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
}

# requirements core|EXTRA...: pyproject's dependencies, or those of the named extras (self-references expanded).
requirements() {
  oci_py requirements "$repo/pyproject.toml" "$@"
}

# The files the app layer is built from: what images/*.Dockerfile copy (see .dockerignore), minus caches.
# The local-cluster harness (kultivar.devcluster) is development tooling: it stays out of the images (import-linter
# checks that nothing the operator or its pods run imports it).
app_files() {
  (cd "$repo" && find pyproject.toml README.md operator -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' ! -path 'operator/kultivar/devcluster/*' \
    -print0 | LC_ALL=C sort -z)
}

pause_mod_dir() {
  local dir=${GOMODCACHE:-$HOME/go/pkg/mod}/k8s.io/kubernetes@$K8S_VERSION
  if [ ! -f "$dir/build/pause/linux/pause.c" ]; then
    command -v go >/dev/null || die "k8s.io/kubernetes@$K8S_VERSION is not in the Go module cache and there is no go"
    dir=$(cd /tmp && GOFLAGS='' GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
      "$py" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  fi
  echo "$dir"
}

compute_keys() {
  local deps_in
  base_key=$({
    echo "base $recipe_base"
    write_sources
    write_dpkg_excludes
    echo "$DEBIAN_SUITE|$DEBIAN_PACKAGES|$PYTHON_VERSION"
  } | hash16)
  req_core=$(requirements core)
  req_serve=$(requirements serve s3 boosting)
  deps_in=$(
    echo "deps $recipe_deps $base_key $PIP_VERSION"
    cat "$repo/constraints.txt"
  )
  deps_key=$(printf '%s\n--\n%s\n' "$deps_in" "$req_core" | hash16)
  serve_key=$(printf '%s\n%s\n--\n%s\n' "$deps_in" "$deps_key" "$req_serve" | hash16)
  app_key=$({
    echo "app $recipe_app $base_key $PIP_VERSION $version"
    app_files | xargs -0 sha256sum --
  } | hash16)
}

# ---------------------------------------------------------------------------------------------------------
# Stages

need_root() {
  [ "$(id -u)" -eq 0 ] || die "building images needs root (debootstrap, chroot, overlay mounts)"
}

fetch_pip() {
  pip_whl=$top/pip/pip-$PIP_VERSION-py3-none-any.whl
  [ -f "$pip_whl" ] && return
  log "pip $PIP_VERSION: downloading its wheel"
  "$py" -m pip download -q --no-deps --only-binary=:all: --dest "$top/pip" "pip==$PIP_VERSION"
  [ -f "$pip_whl" ] || die "pip download did not produce $pip_whl"
}

host_pip() { "$py" "$pip_whl/pip" --disable-pip-version-check "$@"; }

build_base() {
  local dir=$top/base/$base_key t0
  if [ -f "$dir/done" ] && oci_has "base-$base_key"; then
    log "base     $base_key: cached (Debian $DEBIAN_SUITE, Python $(cat "$dir/python-version"))"
    return
  fi
  need_root
  t0=$(now)
  [ -f "$dir/done" ] || debootstrap_base
  log "base     packing the layer ($(du -sh "$dir/rootfs" | cut -f1))"
  mkdir -p "$top/work"
  layer_tar "$dir/rootfs" "$top/work/base.tar"
  oci_add_layer - "base-$base_key" "$top/work/base.tar" \
    "debootstrap --variant=minbase $DEBIAN_SUITE $DEBIAN_MIRROR; apt-get install $DEBIAN_PACKAGES"
  rm -f "$top/work/base.tar"
  log "base     $base_key: built in $(since "$t0") (Python $(cat "$dir/python-version"))"
}

debootstrap_base() {
  local dir=$top/base/$base_key t0 tmp=$top/base/$base_key.tmp r
  t0=$(now)
  r=$tmp/rootfs
  log "base     $base_key: debootstrap --variant=minbase $DEBIAN_SUITE, then $DEBIAN_PACKAGES (cold: ~3-6 min)"
  safe_rm "$tmp"
  mkdir -p "$tmp" "$top/debs"
  if ! debootstrap --variant=minbase --cache-dir="$top/debs" --keyring="$deb_keyring" \
    "$DEBIAN_SUITE" "$r" "$DEBIAN_MIRROR" >"$tmp/debootstrap.log" 2>&1; then
    tail -n 30 "$tmp/debootstrap.log" >&2
    die "debootstrap failed (log: $tmp/debootstrap.log)"
  fi
  log "base     debootstrap done after $(since "$t0"); apt-get upgrade and install $DEBIAN_PACKAGES"
  rm -f "$r/etc/apt/sources.list"
  write_sources >"$r/etc/apt/sources.list.d/debian.sources"
  write_dpkg_excludes >"$r/etc/dpkg/dpkg.cfg.d/excludes"
  local apt=(apt-get -q -o Dpkg::Use-Pty=0)
  case "$DEBIAN_MIRROR $DEBIAN_SECURITY_MIRROR" in
    *snapshot.debian.org*) apt+=(-o Acquire::Check-Valid-Until=false) ;;
  esac
  rm -f "$r/etc/resolv.conf"
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  prepare_root "$r"
  # shellcheck disable=SC2086 # DEBIAN_PACKAGES is a list
  if ! run_in "$r" "${apt[@]}" update >>"$tmp/apt.log" 2>&1 ||
    ! run_in "$r" DEBIAN_FRONTEND=noninteractive "${apt[@]}" -y upgrade >>"$tmp/apt.log" 2>&1 ||
    ! run_in "$r" DEBIAN_FRONTEND=noninteractive "${apt[@]}" -y install --no-install-recommends \
      $DEBIAN_PACKAGES >>"$tmp/apt.log" 2>&1; then
    tail -n 30 "$tmp/apt.log" >&2
    die "apt-get failed in the rootfs (log: $tmp/apt.log)"
  fi
  run_in "$r" "${apt[@]}" clean
  run_in "$r" python3 -c 'import platform; print(platform.python_version())' >"$tmp/python-version"
  case "$(cat "$tmp/python-version")" in
    "$PYTHON_VERSION" | "$PYTHON_VERSION".*) ;;
    *) die "Debian $DEBIAN_SUITE's python3 is $(cat "$tmp/python-version"), versions.env says $PYTHON_VERSION" ;;
  esac
  # shellcheck disable=SC2016 # dpkg-query's format, not shell
  run_in "$r" dpkg-query -W -f '${Package}=${Version}\n' >"$tmp/packages.txt"
  sed -n 's/^libc6=\([0-9]*\.[0-9]*\).*/\1/p' "$tmp/packages.txt" >"$tmp/glibc-version"
  umount_all
  # Slim it like debian:<suite>-slim, and leave nothing host- or build-specific behind.
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  local d
  for d in groff info linda lintian/overrides locale man; do
    if [ -d "$r/usr/share/$d" ]; then find "$r/usr/share/$d" -mindepth 1 -delete; fi
  done
  find "$r/dev" "$r/tmp" "$r/var/tmp" "$r/var/lib/apt/lists" "$r/var/cache/apt" -xdev -mindepth 1 -delete
  find "$r/var/log" -xdev -type f -delete
  rm -f "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r/etc/machine-id"
  : >"$r/etc/resolv.conf"
  : >"$r/etc/hostname"
  chmod 1777 "$r/tmp" "$r/var/tmp"
  safe_rm "$dir"
  mv "$tmp" "$dir"
  touch "$dir/done"
  log "base     rootfs ready after $(since "$t0")"
}

# stage_dir NAME WHEELS: a fresh $top/work/NAME with stage/ (pip's wheel, constraints.txt; bound at /mnt during
# the step) and the directory of wheels to bind at /mnt/wheels.
stage_dir() {
  local w=$top/work/$1
  safe_rm "$w"
  mkdir -p "$w/stage/wheels"
  ln "$pip_whl" "$w/stage/pip.whl" 2>/dev/null || cp "$pip_whl" "$w/stage/pip.whl"
  cp "$repo/constraints.txt" "$w/stage/constraints.txt"
  ln -s "$2" "$w/wheels"
}

# overlay_build NAME KEY STEP LOWER...: run STEP MERGED in an overlay of the LOWER dirs (topmost first), with
# $top/work/NAME/stage at /mnt; then compile the bytecode of what it added. The overlay's upper dir, which holds
# exactly what the step added, is kept as $top/layers/NAME-KEY/upper.
overlay_build() {
  local name=$1 key=$2 step=$3
  shift 3
  local dir=$top/layers/$name-$key w=$top/work/$name lowers
  lowers=$(IFS=:; echo "$*")
  safe_rm "$dir.tmp"
  mkdir -p "$dir.tmp/upper" "$w/ovl" "$w/merged"
  do_mount -t overlay overlay \
    -o "lowerdir=$lowers,upperdir=$dir.tmp/upper,workdir=$w/ovl,redirect_dir=off,index=off,metacopy=off" \
    "$w/merged"
  prepare_root "$w/merged"
  do_mount --bind "$w/stage" "$w/merged/mnt"
  do_mount --bind -o ro "$(realpath "$w/wheels")" "$w/merged/mnt/wheels"
  "$step" "$w/merged"
  # Sources get the fixed mtime before compiling (a .pyc records its source's mtime), the .pyc files after.
  touch_new "$w/merged" "$dir.tmp/upper"
  run_in "$w/merged" /opt/kultivar/bin/python -m compileall -q -j 0 /opt/kultivar/lib >/dev/null
  touch_new "$w/merged" "$dir.tmp/upper"
  umount_all
  check_upper "$dir.tmp/upper"
  local stray
  stray=$(cd "$dir.tmp/upper" && find . -mindepth 1 -maxdepth 1 ! -name opt -printf '%P ')
  [ -z "$stray" ] || die "layer $name wrote outside /opt: $stray"
  cp "$w/created-by" "$dir.tmp/created-by"
  safe_rm "$dir" "$w"
  mv "$dir.tmp" "$dir"
  touch "$dir/done"
}

# tag_layer NAME KEY PARENT_TAG NEW_TAG: add layer NAME-KEY's upper dir on top of PARENT_TAG as NEW_TAG.
tag_layer() {
  local dir=$top/layers/$1-$2 tar
  tar=$top/work/$1-$2.tar
  mkdir -p "$top/work"
  layer_tar "$dir/upper" "$tar"
  oci_add_layer "$3" "$4" "$tar" "$(cat "$dir/created-by")"
  rm -f "$tar"
}

pip_in() {
  local root=$1
  shift
  run_in "$root" /opt/kultivar/bin/python /mnt/pip.whl/pip --disable-pip-version-check --no-input "$@"
}

step_deps() {
  run_in "$1" python3 -m venv --without-pip /opt/kultivar
  pip_in "$1" install -q --root-user-action=ignore --no-index --find-links /mnt/wheels --only-binary=:all: \
    --no-compile --no-cache-dir -c /mnt/constraints.txt -r /mnt/requirements.txt
}
step_serve() {
  pip_in "$1" install -q --root-user-action=ignore --no-index --find-links /mnt/wheels --only-binary=:all: \
    --no-compile --no-cache-dir -c /mnt/constraints.txt -r /mnt/requirements.txt
}
step_app() {
  pip_in "$1" install -q --root-user-action=ignore --no-index --find-links /mnt/wheels --no-deps \
    --no-compile --no-cache-dir "kultivar==$version"
  # Every requirement of everything installed is present (the extras' imports are checked by the smoke test).
  pip_in "$1" check >/dev/null
}

# download_wheels NAME REQUIREMENTS: wheels for the image's Python and glibc into the shared wheelhouse, with the
# host's pip configuration (index, certificates, proxies); the install in the rootfs is then offline.
download_wheels() {
  local base_dir=$top/base/$base_key glibc pyver arch platforms=() m
  glibc=$(cat "$base_dir/glibc-version")
  pyver=$(cat "$base_dir/python-version")
  arch=$(uname -m)
  for ((m = ${glibc#2.}; m >= 5; m--)); do platforms+=(--platform "manylinux_2_${m}_$arch"); done
  platforms+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
  printf '%s\n' "$2" >"$top/work/$1/stage/requirements.txt"
  mkdir -p "$top/wheels"
  log "$(printf '%-8s' "$1") downloading wheels for CPython $pyver, glibc $glibc, $arch"
  host_pip download -q --only-binary=:all: --dest "$top/wheels" "${platforms[@]}" --implementation cp \
    --python-version "$pyver" --abi "cp$(echo "$pyver" | cut -d. -f1,2 | tr -d .)" \
    -c "$repo/constraints.txt" -r "$top/work/$1/stage/requirements.txt"
}

build_deps() {
  local dir=$top/layers/deps-$deps_key t0
  if [ -f "$dir/done" ] && oci_has "deps-$deps_key"; then
    log "deps     $deps_key: cached"
    return
  fi
  need_root
  t0=$(now)
  if [ ! -f "$dir/done" ]; then
    log "deps     $deps_key: the venv and kultivar's dependencies (cold: ~2-4 min)"
    stage_dir deps "$top/wheels"
    download_wheels deps "$req_core"
    echo "python3 -m venv /opt/kultivar; pip install --only-binary=:all: -c constraints.txt kultivar's dependencies" \
      >"$top/work/deps/created-by"
    log "deps     installing into /opt/kultivar"
    overlay_build deps "$deps_key" step_deps "$top/base/$base_key/rootfs"
  fi
  log "deps     packing the layer ($(du -sh "$dir/upper" | cut -f1))"
  tag_layer deps "$deps_key" "base-$base_key" "deps-$deps_key"
  log "deps     $deps_key: built in $(since "$t0")"
}

build_serve() {
  local dir=$top/layers/serve-$serve_key t0
  if [ -f "$dir/done" ] && oci_has "serve-$serve_key"; then
    log "serve    $serve_key: cached"
    return
  fi
  need_root
  t0=$(now)
  if [ ! -f "$dir/done" ]; then
    log "serve    $serve_key: the serve, s3 and boosting extras"
    stage_dir serve "$top/wheels"
    download_wheels serve "$req_serve"
    echo "pip install --only-binary=:all: -c constraints.txt kultivar's serve, s3 and boosting extras" \
      >"$top/work/serve/created-by"
    overlay_build serve "$serve_key" step_serve "$top/layers/deps-$deps_key/upper" "$top/base/$base_key/rootfs"
  fi
  log "serve    packing the layer ($(du -sh "$dir/upper" | cut -f1))"
  tag_layer serve "$serve_key" "deps-$deps_key" "serve-$serve_key"
  log "serve    $serve_key: built in $(since "$t0")"
}

# build_env: a host venv with pyproject's build requirements, kept (keyed by them) so that building the wheel
# does not set up an isolated build environment from the index every time.
build_env() {
  local requires key
  requires=$(oci_py build-requires "$repo/pyproject.toml")
  key=$(printf '%s\n' "$PIP_VERSION" "$("$py" -c 'import sys; print(sys.version)')" "$requires" | hash16)
  benv=$top/buildenv/$key
  [ -f "$benv/done" ] && return
  log "app      a build environment for the wheel: $(echo "$requires" | tr '\n' ' ')"
  safe_rm "$top/buildenv"
  "$py" -m venv --without-pip "$benv"
  mapfile -t requires <<<"$requires"
  "$benv/bin/python" "$pip_whl/pip" --disable-pip-version-check install -q --only-binary=:all: "${requires[@]}"
  touch "$benv/done"
}

# The app layer is built once, over the runtime's layers, and added to both images: it only adds kultivar.
build_app() {
  local dir=$top/layers/app-$app_key t0 w=$top/work/app-wheel whl
  if [ -f "$dir/done" ]; then
    log "app      $app_key: cached"
    return
  fi
  need_root
  t0=$(now)
  log "app      $app_key: building the kultivar $version wheel from $repo"
  safe_rm "$w"
  mkdir -p "$w/src" "$w/dist"
  (cd "$repo" && app_files | tar --null -T - -cf -) | tar -C "$w/src" -xf -
  build_env
  SOURCE_DATE_EPOCH=$epoch "$benv/bin/python" "$pip_whl/pip" --disable-pip-version-check wheel -q \
    --no-build-isolation --no-deps --wheel-dir "$w/dist" "$w/src" >/dev/null
  whl=$(cd "$w/dist" && echo kultivar-*.whl)
  [ -f "$w/dist/$whl" ] || die "pip wheel did not produce a kultivar wheel in $w/dist"
  log "app      $whl built in $(since "$t0"); installing"
  stage_dir app "$w/dist"
  echo "pip install --no-deps $whl" >"$top/work/app/created-by"
  overlay_build app "$app_key" step_app \
    "$top/layers/serve-$serve_key/upper" "$top/layers/deps-$deps_key/upper" "$top/base/$base_key/rootfs"
  safe_rm "$w"
  log "app      $app_key: built in $(since "$t0") ($(du -sh "$dir/upper" | cut -f1))"
}

# The pause binary: upstream's build/pause/linux/pause.c from the pinned k8s.io/kubernetes module, compiled as
# upstream's build/pause/Makefile does (gcc -Os -Wall -Werror -static), into an image with only /pause.
pause_sources() {
  pause_dir=$(pause_mod_dir)/build/pause
  pause_version=$(sed -n 's/^TAG ?= *//p' "$pause_dir/Makefile")
  [ -n "$pause_version" ] || die "no TAG in $pause_dir/Makefile"
  pause_key=$({
    echo "pause $recipe_pause $K8S_VERSION $pause_version"
    sha256sum <"$pause_dir/linux/pause.c"
    gcc --version | head -n 1
  } | hash16)
}

build_pause_layer() {
  local dir=$top/layers/pausebin-$pause_key t0
  if [ -f "$dir/done" ] && oci_has "pausebin-$pause_key"; then
    log "pausebin $pause_key: cached"
    return
  fi
  t0=$(now)
  safe_rm "$dir.tmp"
  mkdir -p "$dir.tmp/upper"
  gcc -Os -Wall -Werror -static -DVERSION="v$pause_version-$K8S_VERSION" -o "$dir.tmp/upper/pause" \
    "$pause_dir/linux/pause.c"
  strip "$dir.tmp/upper/pause"
  "$dir.tmp/upper/pause" -v | grep "v$pause_version" >/dev/null || die "the compiled pause does not report its version"
  chmod 0755 "$dir.tmp/upper/pause"
  touch -d "@$epoch" "$dir.tmp/upper/pause"
  echo "gcc -Os -Wall -Werror -static k8s.io/kubernetes@$K8S_VERSION build/pause/linux/pause.c" \
    >"$dir.tmp/created-by"
  safe_rm "$dir"
  mv "$dir.tmp" "$dir"
  touch "$dir/done"
  oci_has "pausebin-$pause_key" && umoci rm --image "$oci:pausebin-$pause_key"
  tag_layer pausebin "$pause_key" - "pausebin-$pause_key"
  log "pausebin $pause_key: pause $pause_version built in $(since "$t0") ($(du -h "$dir/upper/pause" | cut -f1))"
}

# ---------------------------------------------------------------------------------------------------------
# Images

# image_config NAME: umoci config flags of image NAME, the same settings as images/NAME.Dockerfile.
image_config() {
  local labels=(
    --config.label "org.opencontainers.image.title=kultivar-$1"
    --config.label "org.opencontainers.image.version=$version"
    --config.label "org.opencontainers.image.licenses=Apache-2.0"
  )
  local python_env=(
    --config.env "PATH=/opt/kultivar/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 --config.env HOME=/tmp
    --config.env LANG=C.UTF-8
    # Non-root and numeric, so Pod Security "restricted" (runAsNonRoot) can verify it without a passwd entry.
    --config.user 65532:65532 --config.workingdir /
    --config.label "org.opencontainers.image.base.name=debian:$DEBIAN_SUITE (debootstrap --variant=minbase)"
  )
  case "$1" in
    runtime)
      printf '%s\n' "${labels[@]}" "${python_env[@]}" \
        --config.label "org.opencontainers.image.description=Kultivar: validation, training and model-serving workloads" \
        --config.entrypoint kultivar --config.exposedports 8080/tcp
      ;;
    operator)
      printf '%s\n' "${labels[@]}" "${python_env[@]}" \
        --config.label "org.opencontainers.image.description=Kultivar: the ML lifecycle as Kubernetes resources (operator)" \
        --config.entrypoint kultivar --config.cmd operator --config.cmd "--liveness=http://0.0.0.0:8081/healthz" \
        --config.exposedports 8080/tcp --config.exposedports 8081/tcp
      ;;
    pause)
      printf '%s\n' "${labels[@]}" \
        --config.label "org.opencontainers.image.description=The pod sandbox: upstream pause $pause_version (k8s.io/kubernetes@$K8S_VERSION build/pause/linux/pause.c), static" \
        --config.label "io.kultivar.pause.version=$pause_version" \
        --config.user 65535:65535 --config.entrypoint /pause --config.workingdir /
      ;;
  esac
}

# image_key NAME: the key of image NAME's final tag (its layers' keys and its configuration).
image_key() {
  {
    echo "image $recipe_image $1 $version"
    case "$1" in
      runtime) echo "$serve_key $app_key" ;;
      operator) echo "$deps_key $app_key" ;;
      pause) echo "$pause_key" ;;
    esac
    image_config "$1"
  } | hash16
}

# smoke NAME LOWER...: in a read-only overlay of the image's layers, as UID 65532 with only /tmp writable: every
# .pyc is current (compileall would have to write otherwise), no pip, the CLI starts, the imports work, and the
# system CA store, /etc/services and tzdata are there.
smoke() {
  local name=$1 m=$top/work/smoke-$1/merged imports
  shift
  case "$name" in
    runtime) imports="kultivar.cli, kultivar.workloads.cli, kultivar.serving.cli, numpy, scipy, sklearn, skops.io, skl2onnx, onnx, onnxruntime, onnxmltools, xgboost, lightgbm, \
pandas, pyarrow, starlette, uvicorn, uvloop, httptools, orjson, s3fs" ;;
    operator) imports="kultivar.cli, kultivar.controllers.handlers, kopf, kubernetes, pydantic, prometheus_client" ;;
  esac
  safe_rm "$top/work/smoke-$name"
  mkdir -p "$m"
  do_mount -t overlay overlay -o "lowerdir=$(IFS=:; echo "$*")" "$m"
  prepare_root "$m"
  local u=--userspec=65532:65532
  run_in "$m" "$u" /opt/kultivar/bin/python -m compileall -q /opt/kultivar/lib >/dev/null ||
    die "$name: stale or missing bytecode (compileall wanted to write)"
  run_in "$m" "$u" /opt/kultivar/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("pip") is not None)' ||
    die "$name: pip is in the image"
  run_in "$m" "$u" /opt/kultivar/bin/kultivar --help >/dev/null || die "$name: kultivar --help failed"
  run_in "$m" "$u" /opt/kultivar/bin/python -c "import $imports" || die "$name: imports failed"
  run_in "$m" "$u" /opt/kultivar/bin/python -c 'import os, socket, ssl, zoneinfo
assert os.path.exists(ssl.get_default_verify_paths().openssl_cafile), "no system CA store"
socket.getservbyname("https"), zoneinfo.ZoneInfo("Europe/Berlin")' || die "$name: CA store, /etc/services or tzdata missing"
  umount_all
  safe_rm "$top/work/smoke-$name"
}

# export_archive NAME TAG: the layout's TAG as a one-image OCI layout tarball at archive_of NAME, plus its .json.
export_archive() {
  local name=$1 tag=$2 out x digest
  out=$(archive_of "$name")
  x=$top/work/export-$name
  safe_rm "$x"
  mkdir -p "$x"
  digest=$(oci_py export "$oci" "$tag" "$(ref_of "$name")" "$version" "$x")
  tar -C "$x" --create --file="$out.tmp" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    oci-layout index.json blobs
  mv "$out.tmp" "$out"
  oci_py sidecar-write "kultivar-$name" "$(ref_of "$name")" "$digest" "$(image_key "$name")" "$out" >"$out.json"
  safe_rm "$x"
}

sidecar() { oci_py sidecar-read "$(archive_of "$1").json" "$2"; }

# assemble NAME: build what image NAME needs, its final tag, check it and export it (skipped when current).
assemble() {
  local name=$1 key t0 out
  key=$(image_key "$name")
  out=$(archive_of "$name")
  if [ -f "$out" ] && [ -f "$out.json" ] && [ "$(sidecar "$name" key)" = "$key" ]; then
    log "$(printf '%-8s' "$name") $(ref_of "$name"): up to date"
    return
  fi
  t0=$(now)
  case "$name" in
    runtime | operator)
      build_base
      build_deps
      build_serve
      build_app
      ;;
    pause) build_pause_layer ;;
  esac
  if ! oci_has "$name-$key"; then
    need_root
    log "$(printf '%-8s' "$name") assembling $(ref_of "$name")"
    case "$name" in
      runtime) tag_layer app "$app_key" "serve-$serve_key" "$name-$key" ;;
      operator) tag_layer app "$app_key" "deps-$deps_key" "$name-$key" ;;
      pause) umoci tag --image "$oci:pausebin-$pause_key" "$name-$key" ;;
    esac
    local cfg=()
    mapfile -t cfg < <(image_config "$name")
    umoci config --image "$oci:$name-$key" --created "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
      --history.created_by "umoci config (hack/build-images.sh)" "${cfg[@]}"
    case "$name" in
      runtime) smoke runtime "$top/layers/app-$app_key/upper" "$top/layers/serve-$serve_key/upper" \
        "$top/layers/deps-$deps_key/upper" "$top/base/$base_key/rootfs" ;;
      operator) smoke operator "$top/layers/app-$app_key/upper" "$top/layers/deps-$deps_key/upper" \
        "$top/base/$base_key/rootfs" ;;
    esac
  fi
  export_archive "$name" "$name-$key"
  log "$(printf '%-8s' "$name") $(ref_of "$name") done in $(since "$t0"): $out ($(du -h "$out" | cut -f1))"
}

# prune: drop cached stages, tags and archives the current images no longer use (after a full build only).
prune() {
  local keep_tags keep_dirs t d
  keep_tags=$(printf '%s\n' "base-$base_key" "deps-$deps_key" "serve-$serve_key" "pausebin-$pause_key" \
    "runtime-$(image_key runtime)" "operator-$(image_key operator)" "pause-$(image_key pause)")
  keep_dirs=$(printf '%s\n' "base/$base_key" "layers/deps-$deps_key" "layers/serve-$serve_key" \
    "layers/app-$app_key" "layers/pausebin-$pause_key")
  local dropped=0
  if [ -f "$oci/index.json" ]; then
    while read -r t; do
      grep -qxF -- "$t" <<<"$keep_tags" && continue
      umoci rm --image "$oci:$t"
      dropped=1
    done < <(umoci ls --layout "$oci")
    [ "$dropped" = 0 ] || oci_gc
  fi
  for d in "$top"/base/* "$top"/layers/*; do
    [ -d "$d" ] || continue
    grep -qxF -- "${d#"$top"/}" <<<"$keep_dirs" && continue
    log "pruning $d"
    safe_rm "$d"
  done
  safe_rm "$top/work"
  for d in "$top"/kultivar-*.oci.tar; do
    [ -f "$d" ] || continue
    case "$d" in */kultivar-runtime-"$version".oci.tar | */kultivar-operator-"$version".oci.tar | \
      */kultivar-pause-"$version".oci.tar) continue ;;
    esac
    log "pruning $d"
    rm -f "$d" "$d.json"
  done
}

cmd_build() {
  local wanted=("$@") n
  [ ${#wanted[@]} -gt 0 ] || wanted=("${all_images[@]}")
  for n in "${wanted[@]}"; do
    case " ${all_images[*]} " in *" $n "*) ;; *) die "unknown image '$n' (runtime, operator, pause)" ;; esac
  done
  # Everything that mounts runs in a private mount namespace: no mount outlives this script, whatever happens.
  if [ "$(id -u)" -eq 0 ] && [ -z "${KULTIVAR_IMAGES_NS:-}" ]; then
    KULTIVAR_IMAGES_NS=1 exec unshare --mount --propagation private "$0" build "$@"
  fi
  local t0
  t0=$(now)
  mkdir -p "$top"
  exec 9>"$top/.lock"
  if ! flock -n 9; then
    log "another build-images.sh is running on $top; waiting for it"
    flock 9
  fi
  log "kultivar $version: ${wanted[*]} (cache $top)"
  compute_keys
  pause_sources
  fetch_pip
  for n in "${wanted[@]}"; do assemble "$n"; done
  [ ${#wanted[@]} -lt ${#all_images[@]} ] || prune
  log "done in $(since "$t0"):"
  for n in "${wanted[@]}"; do
    printf '  %-45s %s (%s)\n' "$(ref_of "$n")" "$(archive_of "$n")" "$(du -h "$(archive_of "$n")" | cut -f1)"
  done
}

cmd_import() {
  local address=/run/containerd/containerd.sock ns=k8s.io n
  while [ $# -gt 0 ]; do
    case "$1" in
      --address) address=$2; shift 2 ;;
      --address=*) address=${1#*=}; shift ;;
      --namespace | -n) ns=$2; shift 2 ;;
      --namespace=*) ns=${1#*=}; shift ;;
      *) die "import: unknown argument '$1' (--address SOCKET, --namespace NS)" ;;
    esac
  done
  local ctr=(ctr --address "$address" --namespace "$ns")
  for n in "${all_images[@]}"; do
    local archive ref digest have t0
    archive=$(archive_of "$n")
    if [ ! -f "$archive" ] || [ ! -f "$archive.json" ]; then
      die "$archive is missing: run hack/build-images.sh build first"
    fi
    ref=$(sidecar "$n" reference)
    digest=$(sidecar "$n" digest)
    have=$("${ctr[@]}" images ls "name==$ref" | awk 'NR > 1 { print $3 }')
    if [ "$have" = "$digest" ]; then
      log "$ref: already in containerd ($digest)"
      continue
    fi
    t0=$(now)
    "${ctr[@]}" images import "$archive" >/dev/null
    local old=$have
    have=$("${ctr[@]}" images ls "name==$ref" | awk 'NR > 1 { print $3 }')
    [ "$have" = "$digest" ] || die "$ref: imported $archive but containerd has '${have:-nothing}', not $digest"
    log "$ref: imported in $(since "$t0") ($digest)"
    # The image this one replaced keeps CRI's `sha256:<config digest>` reference, and with it all its layers;
    # drop that reference unless some other name still uses the old image.
    if [ -n "$old" ]; then
      local refs
      refs=$("${ctr[@]}" images ls | awk -v d="$old" 'NR > 1 && $3 == d { print $1 }')
      if ! grep -v '^sha256:' <<<"$refs" >/dev/null; then
        grep '^sha256:' <<<"$refs" | xargs -r "${ctr[@]}" images rm >/dev/null
      fi
    fi
  done
}

cmd_refs() {
  local n
  for n in "${all_images[@]}"; do echo "$(ref_of "$n") $(archive_of "$n")"; done
}

# The Dockerfiles' ARG defaults must be versions.env's values, so both ways of building give the same images.
cmd_check() {
  local f k want got fail=0
  for f in "$repo"/images/*.Dockerfile; do
    for k in DEBIAN_SUITE DEBIAN_MIRROR DEBIAN_SECURITY_MIRROR DEBIAN_PACKAGES PYTHON_VERSION PIP_VERSION; do
      want=${!k}
      got=$(sed -n "s/^ARG $k=//p" "$f" | head -n 1)
      got=${got#\"}
      got=${got%\"}
      if [ "$got" != "$want" ]; then
        log "$(basename "$f"): ARG $k=${got:-<missing>}, hack/versions.env says $want"
        fail=1
      fi
    done
  done
  [ "$fail" = 0 ] || die "images/*.Dockerfile are out of step with hack/versions.env"
  log "images/*.Dockerfile are in step with hack/versions.env"
}

case "${1:-build}" in
  build) shift || true; cmd_build "$@" ;;
  runtime | operator | pause) cmd_build "$@" ;;
  import) shift; cmd_import "$@" ;;
  refs) cmd_refs ;;
  check) cmd_check ;;
  clean) safe_rm "$top"; log "removed $top" ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (build, import, refs, check, clean)" ;;
esac
