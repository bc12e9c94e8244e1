"""Dev mode's servers, as far as they can be checked without their images: MLflow's
command parses with MLflow's own CLI and its allowed hosts admit the Service's names
(MLflow refuses unknown Host headers since 3.5); Kafka advertises its Service."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.timeout(1800)

SERVICE_HOSTS = [
    "driftline-mlflow.driftline-system.svc.cluster.local:5000",
    "driftline-mlflow.driftline-system.svc:5000",
    "driftline-mlflow.driftline-system:5000",
    "driftline-mlflow:5000",
]


def _container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == f"driftline-{name}"
    )
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_dev_mlflow_command_and_allowed_hosts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from mlflow.cli import server
    from mlflow.server.security_utils import is_allowed_host_header

    container = _container(rendered["dev-and-monitoring"], "mlflow")
    command = container["command"]
    assert command[:2] == ["mlflow", "server"]
    params = server.make_context("server", command[2:]).params  # refuses unknown options
    assert (params["host"], params["port"], params["serve_artifacts"]) == ("0.0.0.0", 5000, True)
    env = {e["name"]: e["value"] for e in container["env"]}
    allowed = [h.strip() for h in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    for host in SERVICE_HOSTS:
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "attacker.example:5000")


def test_dev_mlflow_runs_as_the_local_runtime_runs_it(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Job execution off (its worker processes OOM-killed the pod at 1Gi), telemetry off."""
    from driftline.local.servers.mlflow import SERVER_ENVIRONMENT

    container = _container(rendered["dev-and-monitoring"], "mlflow")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert {k: env.get(k) for k in SERVER_ENVIRONMENT} == SERVER_ENVIRONMENT


def test_dev_kafka_advertises_its_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["dev-and-monitoring"]
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "driftline-kafka"
    )
    properties = dict(
        line.split("=", 1) for line in config["data"]["server.properties"].splitlines() if line
    )
    assert properties["advertised.listeners"] == (
        "PLAINTEXT://driftline-kafka.driftline-system.svc.cluster.local:9092"
    )
    assert properties["controller.quorum.voters"] == "1@localhost:9093"
    script = _container(docs, "kafka")["command"][-1]
    assert "/etc/driftline-kafka/server.properties" in script
    pod = next(
        d for d in docs if d["metadata"]["name"] == "driftline-kafka" and d["kind"] == "Deployment"
    )
    assert pod["spec"]["template"]["spec"]["enableServiceLinks"] is False
