"""NetworkPolicies: deny everything to and from a model's pods, then allow what each
part needs.

Kafka, Redis and MLflow live outside the model's namespace (often outside the
cluster), and a NetworkPolicy cannot name a host, so egress is allowed by port:
the ports of the spec's endpoints, DNS, and the artifact store's for the parts that
load or store models. Ingress: clients reach inference's HTTP port; Prometheus
reaches every part's metrics port from inside the cluster.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from driftline.api.parts import INFERENCE, TRAINER, Part
from driftline.api.spec import split_servers
from driftline.operator.builders.context import (
    BuildContext,
    child_name,
    metadata,
    model_labels,
    part_labels,
    part_selector,
)
from driftline.operator.builders.parts import trainer_ranks

KAFKA_DEFAULT_PORT = 9092
REDIS_DEFAULT_PORT = 6379
DNS_PORT = 53
# Labels of every pod of one model (and of no pod of another).
_SELECT = ("driftline.io/model", "app.kubernetes.io/part-of")


def kafka_ports(servers: str) -> set[int]:
    ports = set()
    for server in split_servers(servers):
        host, sep, port = server.rpartition(":")
        ports.add(int(port) if sep and host and port.isdigit() else KAFKA_DEFAULT_PORT)
    return ports


def url_port(url: str) -> int | None:
    """The TCP port a URL talks to, or None for a URL that is not a network endpoint."""
    parsed = urlparse(url)
    defaults = {"http": 80, "https": 443, "redis": REDIS_DEFAULT_PORT, "rediss": REDIS_DEFAULT_PORT}
    if parsed.scheme not in defaults:
        return None  # sqlite:///..., file:/...: local to the pod
    try:
        return parsed.port or defaults[parsed.scheme]
    except ValueError:
        return defaults[parsed.scheme]


def egress_ports(ctx: BuildContext, part: Part) -> list[int]:
    spec = ctx.model.spec
    ports = kafka_ports(spec.kafka.bootstrap_servers)
    redis_urls = [spec.redis.url]
    if part is INFERENCE and spec.feast is not None:
        redis_urls.append(spec.feast.redis.url)  # Feast's online store (source.feast)
    for url in redis_urls:
        redis = url_port(url)
        if redis is not None:
            ports.add(redis)
    if part.uses_mlflow:
        tracking = url_port(spec.model.registry.tracking_uri)
        if tracking is not None:
            ports.add(tracking)
        ports.update(ctx.settings.artifact_store_ports)
    return sorted(ports)


def _tcp(ports: list[int]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def default_deny(ctx: BuildContext) -> dict[str, Any]:
    """Selects every pod of this model and allows nothing; the part policies add to it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ctx, child_name(ctx.name, "default-deny"), model_labels(ctx)),
        "spec": {
            "podSelector": {"matchLabels": {k: model_labels(ctx)[k] for k in _SELECT}},
            "policyTypes": ["Ingress", "Egress"],
        },
    }


def part_policy(ctx: BuildContext, part: Part) -> dict[str, Any]:
    settings = ctx.settings
    ingress: list[dict[str, Any]] = []
    if part is INFERENCE:
        grpc = ctx.model.spec.inference.grpc
        served = [settings.inference_port, *([grpc.port] if grpc.enabled else [])]
        ingress.append({"ports": _tcp(served)})  # any client
    ingress.append(
        # Any pod in the cluster (Prometheus), nothing from outside it.
        {"from": [{"namespaceSelector": {}}], "ports": _tcp([settings.metrics_port])}
    )
    egress = [
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
        {"ports": _tcp(egress_ports(ctx, part))},
    ]
    if part is TRAINER and trainer_ranks(ctx.model) > 1:
        # The ranks talk to each other: the rendezvous, then gloo on ports of its choosing.
        def ranks() -> list[dict[str, Any]]:
            return [{"podSelector": {"matchLabels": part_selector(ctx, TRAINER.name)}}]

        ingress.append({"from": ranks()})
        egress.append({"to": ranks()})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ctx, child_name(ctx.name, part.name), part_labels(ctx, part.name)),
        "spec": {
            "podSelector": {"matchLabels": part_selector(ctx, part.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
