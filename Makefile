# Driftline: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# uv installs from its cache outside the repo (~/.cache/uv): a warm setup takes seconds.
UV := $(VENV)/bin/uv
EXTRAS ?= all,cpu,dev
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CHAOS_LONG ?= 1

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check "uv>=0.4"
	$(UV) pip install --python $(PY) -c requirements/constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

.PHONY: help
help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: setup
setup: $(STAMP) ## create .venv and install Driftline with its test tools

.PHONY: test
# The rig first: its tests fail (never pass silently) when it is not built, and a
# built rig costs only a cache check here.
test: $(STAMP) rig ## run the test suite (starts real Kafka, Redis, MLflow and the test rig on loopback)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff (format check and lint) and import contracts between the floors
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

.PHONY: format
format: $(STAMP) ## format the code with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: typecheck
typecheck: $(STAMP) ## mypy (strict) over the source
	$(VENV)/bin/mypy $(wildcard services operator/driftline/operator)

.PHONY: manifests
manifests: $(STAMP) ## regenerate the CRD and everything derived from the spec models
	$(PY) -m driftline.api.manifests --out manifests --chart charts/driftline
	$(PY) -m driftline.operator.manifests --out manifests/operator

.PHONY: demo
demo: $(STAMP) ## run the closed loop on this machine: drift detected, learned, promoted
	$(VENV)/bin/driftline demo

.PHONY: bench
bench: $(STAMP) ## run the benchmarks against the peers; writes benchmarks/results/REPORT.md
	$(PY) -m benchmarks.run

.PHONY: bench-setup
bench-setup: $(STAMP) ## install the benchmark's peers (MLServer, KServe, BentoML), each in a venv of its own
	$(PY) -m benchmarks.run --setup

.PHONY: chaos
# The same tests `make test` runs, longer (CHAOS_LONG=1: more traffic and kills),
# with their figures written to benchmarks/results/chaos.{json,md}.
chaos: $(STAMP) ## reliability suite: SIGKILLs in the loop, outages, 10x overload; writes benchmarks/results/chaos.*
	DRIFTLINE_CHAOS_RESULTS=benchmarks/results DRIFTLINE_CHAOS_LONG=$(CHAOS_LONG) \
	  nice $(PY) -m pytest tests/chaos -m chaos -s -q $(PYTEST_ARGS)

.PHONY: rig
rig: ## build the test rig (Kubernetes control plane and a real node, Apache Kafka, Feast's venv, tritonclient's gRPC venv) into a cache outside the repo
	@bash tests/rig/host-packages.sh
	@bash tests/rig/build.sh
	@bash tests/rig/feast/build.sh
	@bash tests/rig/tritonclient/build.sh

# Images: `make images REGISTRY=registry.example.com/team IMAGE_TAG=0.1.0 PUSH=1` builds
# and pushes <REGISTRY>/driftline/<image>:<IMAGE_TAG> with the `docker` on PATH.
# IMAGES picks some; DOCKER_BUILD_ARGS passes more (e.g. --build-arg PYTHON_IMAGE=...).
IMAGE_TAG ?= dev
REGISTRY ?=
PUSH ?=
IMAGES ?= operator inference services inference-gpu dev-redis dev-kafka dev-mlflow
DOCKER_BUILD_ARGS ?=
IMAGE_PREFIX := $(if $(REGISTRY),$(patsubst %/,%,$(REGISTRY))/,)driftline
.PHONY: images
images: ## build the container images (needs Docker): operator, inference, services, inference-gpu, and dev mode's dev-redis, dev-kafka, dev-mlflow; PUSH=1 pushes
	@command -v docker >/dev/null || { echo "make images needs Docker" >&2; exit 1; }
	@set -e; for image in $(IMAGES); do \
	  case $$image in \
	    operator) file=docker/operator.Dockerfile; args="" ;; \
	    inference) file=docker/services.Dockerfile; \
	      args="--build-arg EXTRAS=inference,joiner,drift,cpu --build-arg IMAGE_TITLE=driftline-inference --build-arg HEALTH_PORT=8080" ;; \
	    services) file=docker/services.Dockerfile; args="" ;; \
	    inference-gpu) file=docker/inference-gpu.Dockerfile; args="" ;; \
	    dev-redis|dev-kafka|dev-mlflow) file=docker/dev/$${image#dev-}.Dockerfile; args="" ;; \
	    *) echo "unknown image $$image (operator, inference, services, inference-gpu," \
	      "dev-redis, dev-kafka, dev-mlflow)" >&2; exit 1 ;; \
	  esac; \
	  ref=$(IMAGE_PREFIX)/$$image:$(IMAGE_TAG); \
	  echo "docker build -f $$file $$args $(DOCKER_BUILD_ARGS) -t $$ref ."; \
	  docker build -f $$file $$args $(DOCKER_BUILD_ARGS) -t $$ref .; \
	  if [ -n "$(PUSH)" ]; then docker push $$ref; fi; \
	done

.PHONY: e2e
e2e: ## opt-in: end-to-end on a kind cluster (needs Docker)
	bash e2e/run.sh

.PHONY: grpc-stubs
# grpcio-tools in a throwaway environment (its version is the grpcio pin of the lock:
# the generated service module checks the runtime is no older).
GRPC_DIR := services/inference/driftline/inference/oip_grpc
grpc-stubs: ## regenerate the Open Inference Protocol's gRPC modules from inference.proto
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q "uv>=0.4"; }
	$(UV) run --no-project --python 3.11 \
	  --with "grpcio-tools==$$(sed -n 's/^grpcio==\([^ ]*\).*/\1/p' requirements/constraints.txt)" \
	  python -m grpc_tools.protoc -I services/inference --python_out=services/inference \
	  --grpc_python_out=services/inference $(GRPC_DIR)/inference.proto
	@for f in $(GRPC_DIR)/inference_pb2.py $(GRPC_DIR)/inference_pb2_grpc.py; do \
	  { echo "# Generated from inference.proto by \`make grpc-stubs\` (grpcio-tools); do not edit."; \
	    cat "$$f"; } >"$$f.tmp" && mv "$$f.tmp" "$$f"; done

.PHONY: clean
clean: ## remove the virtual environment and caches in the repo
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

.PHONY: lock
lock: ## re-resolve requirements/constraints.txt from pyproject.toml
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q "uv>=0.4"; }
	$(UV) pip compile pyproject.toml --extra all --extra cpu --extra dev --python-version 3.11 \
	  --no-header --annotation-style line -o requirements/constraints.txt
