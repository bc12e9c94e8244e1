# The MLflow tracking server for the chart's dev mode (`dev.mlflow.image`): MLflow
# from PyPI at the version requirements/constraints.txt pins (the one Driftline is
# tested with), with the same pins for its dependencies.
#   docker build -f docker/dev/mlflow.Dockerfile -t driftline/dev-mlflow:dev .
# PYTHON_IMAGE: any Debian-like image with python3 and its venv module (ensurepip).
# BUILD_IMAGE: the build stage's base, PYTHON_IMAGE unless given: a base that adds a
# CA certificate (a TLS-intercepting proxy to PyPI) goes here, never into the image.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
ARG BUILD_IMAGE=${PYTHON_IMAGE}

FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy PATH=/opt/uv/bin:$PATH
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install "uv==0.13.9" \
 && python3 -m venv /opt/mlflow
COPY requirements/constraints.txt /src/requirements/
RUN uv pip install --python /opt/mlflow/bin/python -c /src/requirements/constraints.txt mlflow

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="driftline-dev-mlflow" \
      org.opencontainers.image.description="MLflow for Driftline's dev mode (not for production)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --home-dir /mlflow --create-home driftline
COPY --from=build /opt/mlflow /opt/mlflow
ENV PATH=/opt/mlflow/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    MLFLOW_ENABLE_TELEMETRY=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 10001:10001
WORKDIR /mlflow
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/health', timeout=2)"]
CMD ["mlflow", "server", "--host=0.0.0.0", "--port=5000", "--workers=1", \
     "--backend-store-uri=sqlite:////mlflow/mlflow.db", "--artifacts-destination=/mlflow/artifacts"]
