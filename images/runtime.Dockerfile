# syntax=docker/dockerfile:1
# The Kultivar runtime: every pod the operator creates runs it. Dataset validation and training Jobs
# (`kultivar validate|train ...`), retention cleanup Jobs, and model servers (`kultivar serve`).
#
#   docker build -f images/runtime.Dockerfile -t kultivar-runtime:0.1.0 .
#
# Without Docker, `make images` (hack/build-images.sh) builds the same image. Both start from the same Debian
# release with Debian's own python3; the ARG defaults below are hack/versions.env's values, and
# `hack/build-images.sh check` fails when they drift. Every Python dependency is pinned by constraints.txt
# and installed from wheels only. The operator sets each pod's command; pods run as UID 65532 with a read-only
# root, /tmp an emptyDir.
ARG DEBIAN_SUITE=bookworm

FROM debian:${DEBIAN_SUITE}-slim AS base
ARG DEBIAN_SUITE=bookworm
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
ARG DEBIAN_PACKAGES="python3 ca-certificates netbase libgomp1"
ARG PYTHON_VERSION=3.11
# The same apt sources as hack/build-images.sh writes; a snapshot.debian.org mirror pins the packages' content.
RUN set -eu; \
    rm -f /etc/apt/sources.list; \
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
      "$DEBIAN_MIRROR" "$DEBIAN_SUITE" "$DEBIAN_SUITE" /usr/share/keyrings/debian-archive-keyring.gpg \
      "$DEBIAN_SECURITY_MIRROR" "$DEBIAN_SUITE" /usr/share/keyrings/debian-archive-keyring.gpg \
      >/etc/apt/sources.list.d/debian.sources; \
    case "$DEBIAN_MIRROR $DEBIAN_SECURITY_MIRROR" in \
      *snapshot.debian.org*) echo 'Acquire::Check-Valid-Until "false";' >/etc/apt/apt.conf.d/99snapshot ;; \
    esac; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get -y upgrade; \
    DEBIAN_FRONTEND=noninteractive apt-get -y install --no-install-recommends $DEBIAN_PACKAGES; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; sys.exit(v != '$PYTHON_VERSION' and 'python3 is ' + v)"

FROM base AS build
ARG PIP_VERSION=26.3
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# A venv without pip or setuptools, as hack/build-images.sh makes it; pip (run from Debian's wheel of it, only in
# this stage) installs the pinned pip, which installs everything and is then removed.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get -y install --no-install-recommends python3-pip-whl \
 && python3 -m venv --without-pip /opt/kultivar \
 && /opt/kultivar/bin/python "$(ls /usr/share/python-wheels/pip-*.whl)/pip" install "pip==${PIP_VERSION}"
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY operator/ operator/
# serve: the inference server; s3: S3-compatible artifact stores and s3:// datasets; boosting: XGBoost, LightGBM.
RUN /opt/kultivar/bin/pip wheel --no-deps --wheel-dir /tmp/dist . \
 && /opt/kultivar/bin/pip install --only-binary=:all: -c constraints.txt "$(ls /tmp/dist/kultivar-*.whl)[serve,s3,boosting]" \
 && /opt/kultivar/bin/pip uninstall -y pip \
 && find /opt/kultivar -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/kultivar/bin/python -m compileall -q /opt/kultivar/lib

FROM base
LABEL org.opencontainers.image.title="kultivar-runtime" \
      org.opencontainers.image.description="Kultivar: validation, training and model-serving workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/kultivar/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp LANG=C.UTF-8
COPY --from=build /opt/kultivar /opt/kultivar
# Non-root, numeric, so Pod Security "restricted" (runAsNonRoot) can verify it without a passwd entry.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kultivar"]
