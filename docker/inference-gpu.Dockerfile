# Driftline inference on NVIDIA GPUs: CUDA 12 + cuDNN 9 runtime, onnxruntime-gpu
# (never the CPU wheel beside it), TensorRT optional (--build-arg TENSORRT=1).
#   docker build -f docker/inference-gpu.Dockerfile -t driftline/inference-gpu:dev .
# BUILD_IMAGE: the build stage's base, CUDA_IMAGE unless given: a base that adds a
# CA certificate (a TLS-intercepting proxy to PyPI) goes here, never into the image.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG BUILD_IMAGE=${CUDA_IMAGE}

FROM ${BUILD_IMAGE} AS build
ARG TENSORRT=0
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_LINK_MODE=copy PATH=/opt/uv/bin:$PATH
# python3 is the base image's own (Ubuntu 24.04: 3.12); the image tag pins it.
# uv in a venv of its own: the build tool stays out of /opt/driftline (the image).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/uv && /opt/uv/bin/pip install "uv==0.13.9" \
 && python3 -m venv /opt/driftline
COPY pyproject.toml README.md LICENSE /src/
COPY requirements/constraints.txt /src/requirements/
WORKDIR /src
RUN uv pip compile pyproject.toml --extra inference --extra gpu \
      -c requirements/constraints.txt -o /tmp/requirements.txt \
 && uv pip install --python /opt/driftline/bin/python -r /tmp/requirements.txt \
 && if [ "$TENSORRT" = "1" ]; then \
      uv pip install --python /opt/driftline/bin/python "tensorrt-cu12>=10"; fi
COPY services /src/services
COPY operator /src/operator
RUN uv pip install --python /opt/driftline/bin/python --no-deps /src

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="driftline-inference-gpu" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --home-dir /home/driftline --create-home driftline
COPY --from=build /opt/driftline /opt/driftline
ENV PATH=/opt/driftline/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1 HOME=/home/driftline
USER 10001:10001
WORKDIR /home/driftline
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
ENTRYPOINT ["python", "-m", "driftline.inference"]
