# The Driftline operator (kopf). Small: no torch, no ONNX Runtime, no alibi-detect.
#   docker build -f docker/operator.Dockerfile -t driftline/operator:dev .
# PYTHON_IMAGE: any Debian-like image with python3 and its venv module (ensurepip).
# BUILD_IMAGE: the build stage's base, PYTHON_IMAGE unless given: a base that adds a
# CA certificate (a TLS-intercepting proxy to PyPI) goes here, never into the image.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
ARG BUILD_IMAGE=${PYTHON_IMAGE}

FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy PATH=/opt/uv/bin:$PATH
# uv in a venv of its own: the build tool stays out of /opt/driftline (the image).
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install "uv==0.13.9" \
 && python3 -m venv /opt/driftline
COPY pyproject.toml README.md LICENSE /src/
COPY requirements/constraints.txt /src/requirements/
WORKDIR /src
RUN uv pip compile pyproject.toml --extra operator --extra rollout \
      -c requirements/constraints.txt -o /tmp/requirements.txt \
 && uv pip install --python /opt/driftline/bin/python -r /tmp/requirements.txt
COPY services /src/services
COPY operator /src/operator
RUN uv pip install --python /opt/driftline/bin/python --no-deps /src

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="driftline-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --home-dir /home/driftline --create-home driftline
COPY --from=build /opt/driftline /opt/driftline
ENV PATH=/opt/driftline/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1 HOME=/home/driftline
USER 10001:10001
WORKDIR /home/driftline
# kopf's liveness endpoint (--liveness=http://0.0.0.0:8080/healthz).
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "driftline.operator"]
