# syntax=docker/dockerfile:1
# The Kultivar runtime: every pod the operator creates runs it. Dataset validation and training Jobs
# (`kultivar validate|train ...`), retention cleanup Jobs, and model servers (`kultivar serve`).
#
#   docker build -f images/runtime.Dockerfile -t kultivar-runtime:0.1.0 .
#
# The operator sets each pod's command; pods run as UID 65532 with a read-only root, /tmp an emptyDir.
# The base is pinned by version (append @sha256:... through --build-arg PYTHON=... to pin its content);
# every Python dependency is pinned by constraints.txt.
ARG PYTHON=python:3.11.13-slim-bookworm

FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/kultivar
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY operator/ operator/
# serve: the inference server; s3: S3-compatible artifact stores and s3:// datasets.
RUN /opt/kultivar/bin/pip install -c constraints.txt '.[serve,s3]' \
 && /opt/kultivar/bin/pip uninstall -y pip \
 && find /opt/kultivar -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/kultivar/bin/python -m compileall -q /opt/kultivar/lib

FROM ${PYTHON}
LABEL org.opencontainers.image.title="kultivar-runtime" \
      org.opencontainers.image.description="Kultivar: validation, training and model-serving workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/kultivar/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
COPY --from=build /opt/kultivar /opt/kultivar
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kultivar"]
