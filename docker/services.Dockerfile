# Driftline parts (inference on CPU, joiner, trainer, drift monitor, rollout).
#   docker build -f docker/services.Dockerfile -t driftline/services:dev .
# One image runs any part: `python -m driftline.<part>` (the operator sets the command).
# EXTRAS picks the parts' libraries; the default holds every part with ONNX Runtime CPU
# and the converters `driftline import` uses (the operator's import Job runs here too).
# `--build-arg EXTRAS=inference,joiner,drift,cpu --build-arg IMAGE_TITLE=driftline-inference`
# gives the inference image: no torch, no alibi-detect; it runs inference on CPUs, the
# joiner (whose extra adds nothing to the core dependencies) and the drift monitor on
# its scipy backend (`drift` adds scipy; `make images` builds it so). alibi-detect and
# torch come with `drift-alibi`, in this default.
# PYTHON_IMAGE: any Debian-like image with python3 and its venv module (ensurepip).
# BUILD_IMAGE: the build stage's base, PYTHON_IMAGE unless given: a base that adds a
# CA certificate (a TLS-intercepting proxy to PyPI) goes here, never into the image.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
ARG BUILD_IMAGE=${PYTHON_IMAGE}

FROM ${BUILD_IMAGE} AS build
ARG EXTRAS=inference,joiner,trainer,drift,drift-alibi,rollout,import,cpu
# PyPI's Linux torch wheels carry CUDA (several GB of nvidia-* wheels) that a CPU
# image never uses. TORCH_INDEX=https://download.pytorch.org/whl/cpu takes torch
# from PyTorch's CPU wheels instead (same version, +cpu), for an image of ~1.5 GB.
ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy PATH=/opt/uv/bin:$PATH
# uv in a venv of its own: the build tool stays out of /opt/driftline (the image).
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install "uv==0.13.9" \
 && python3 -m venv /opt/driftline
# Dependencies first, from pyproject.toml and the lock alone: a change of source
# code does not rebuild this layer.
COPY pyproject.toml README.md LICENSE /src/
COPY requirements/constraints.txt /src/requirements/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN extras=() && for e in ${EXTRAS//,/ }; do extras+=(--extra "$e"); done \
 && index=() && if [ -n "$TORCH_INDEX" ]; then \
      index=(--extra-index-url "$TORCH_INDEX" --index-strategy unsafe-best-match); fi \
 && uv pip compile pyproject.toml "${extras[@]}" "${index[@]}" -c requirements/constraints.txt \
      -o /tmp/requirements.txt \
 && uv pip install --python /opt/driftline/bin/python "${index[@]}" -r /tmp/requirements.txt
COPY services /src/services
COPY operator /src/operator
RUN uv pip install --python /opt/driftline/bin/python --no-deps /src

FROM ${PYTHON_IMAGE}
ARG IMAGE_TITLE=driftline-services
# Where the HEALTHCHECK asks: workers answer /healthz on their metrics port (9100),
# inference on its own port (8080: the inference image sets HEALTH_PORT=8080).
ARG HEALTH_PORT=9100
LABEL org.opencontainers.image.title="${IMAGE_TITLE}" \
      org.opencontainers.image.source="https://github.com/driftline/driftline" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --home-dir /home/driftline --create-home driftline
COPY --from=build /opt/driftline /opt/driftline
ENV PATH=/opt/driftline/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1 HOME=/home/driftline \
    DRIFTLINE_HEALTH_URL=http://127.0.0.1:${HEALTH_PORT}/healthz
USER 10001:10001
WORKDIR /home/driftline
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request as u; u.urlopen(os.environ['DRIFTLINE_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["python", "-m"]
CMD ["driftline.inference"]
