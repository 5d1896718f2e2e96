# syntax=docker/dockerfile:1
# The operator image: Kopf and the finetune_operator package only. The trainer (and torch) live in
# their own image (trainer_image/), so this one stays small and starts fast.

# ---- build: a virtualenv with the operator's runtime dependencies ----
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
# Only [project].dependencies: the optional extras (trainer, sandbox, test) are never read, so no
# torch or transformers can slip in.
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --requirement requirements.txt
COPY operator/finetune_operator /app/finetune_operator
# Bytecode compiled now: the root filesystem is read-only at run time.
RUN /opt/venv/bin/python -m compileall -q /app

# ---- runtime ----
FROM python:3.11.11-slim-bookworm
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
# 8080: Kopf liveness (/healthz); 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "finetune_operator"]
