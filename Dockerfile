# syntax=docker/dockerfile:1
# The operator image: Kopf and the finetune_operator package only. The trainer (and torch) live in their
# own image (trainer_image/), the sandbox and the ftjob CLI in none, so this one stays small and starts fast.
#
# Build from the repository root; the root .dockerignore admits only what this file copies:
#   docker build -t finetune-operator:0.1.0 .          (or `make images`, which needs no Docker engine)
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

# ---- build: a virtualenv with the operator's pinned runtime dependencies ----
FROM ${BASE_IMAGE} AS build
# pip settings for this stage only: `make images` mounts the machine's own configuration read-only and
# names it here; nothing of it reaches the final image.
ARG PIP_CONFIG_FILE=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY operator/requirements.txt /tmp/requirements.txt
# --no-deps: requirements.txt is the complete, pinned set. It leaves out Optuna's database backends
# (SQLAlchemy, Alembic), which in-memory studies never import. pip and the packages' own test suites are
# build tools: they go before the venv is copied.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --requirement /tmp/requirements.txt \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && find /opt/venv -depth -type d \( -name tests -o -name testing \) -path '*/numpy/*' -exec rm -rf {} +
COPY operator/finetune_operator /app/finetune_operator
# Bytecode compiled now: the root filesystem is read-only at run time.
RUN /opt/venv/bin/python -m compileall -q /app

# ---- runtime ----
FROM ${BASE_IMAGE}
RUN groupadd --gid 1000 finetune \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin finetune
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 1000:1000
# 8080: Kopf liveness (/healthz); 8081: progress reports from trainers; 9090: Prometheus metrics.
EXPOSE 8080 8081 9090
ENTRYPOINT ["python", "-m", "finetune_operator"]
