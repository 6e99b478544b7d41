# syntax=docker/dockerfile:1
# The Kultivar operator: `kultivar operator`, run by the Helm chart as UID 65532 with a read-only root.
#
#   docker build -f images/operator.Dockerfile -t kultivar-operator:0.1.0 .
#
# The base is pinned by version; to pin it by content as well, append its digest (e.g. from
# `docker buildx imagetools inspect python:3.11.13-slim-bookworm`): --build-arg PYTHON=python:...@sha256:...
# Every Python dependency is pinned by constraints.txt, the same file CI tests with.
ARG PYTHON=python:3.11.13-slim-bookworm

FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/kultivar
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY operator/ operator/
# The operator needs no serving stack and no object-store clients: it never reads artifacts itself.
RUN /opt/kultivar/bin/pip install -c constraints.txt . \
 && /opt/kultivar/bin/pip uninstall -y pip \
 && find /opt/kultivar -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/kultivar/bin/python -m compileall -q /opt/kultivar/lib

FROM ${PYTHON}
LABEL org.opencontainers.image.title="kultivar-operator" \
      org.opencontainers.image.description="Kultivar: the ML lifecycle as Kubernetes resources (operator)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/kultivar/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
COPY --from=build /opt/kultivar /opt/kultivar
# Non-root, numeric, so Pod Security "restricted" (runAsNonRoot) can verify it without a passwd entry.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["kultivar"]
CMD ["operator", "--liveness=http://0.0.0.0:8081/healthz"]
