"""NetworkPolicies: deny by default; each part may reach only the ports it needs."""

from __future__ import annotations

from driftline.api.parts import INFERENCE, JOINER, TRAINER
from driftline.operator.builders import BuildContext
from driftline.operator.builders.network import (
    default_deny,
    egress_ports,
    kafka_ports,
    part_policy,
    url_port,
)

from .conftest import sample


def test_ports_from_endpoints() -> None:
    assert kafka_ports("a:9093, b:19092,c") == {9093, 19092, 9092}
    assert url_port("redis://redis.ml:6380/0") == 6380
    assert url_port("rediss://redis.ml/0") == 6379
    assert url_port("http://mlflow.ml") == 80
    assert url_port("https://mlflow.example.com/") == 443
    assert url_port("sqlite:///tmp/mlflow.db") is None


def test_default_deny_selects_every_pod_of_the_model_and_allows_nothing() -> None:
    policy = default_deny(BuildContext(sample("minimal")))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]
    assert policy["spec"]["podSelector"]["matchLabels"]["driftline.io/model"] == "churn"


def test_each_part_reaches_only_its_backends() -> None:
    ctx = BuildContext(
        sample(
            "minimal",
            kafka__bootstrapServers="kafka-0:9093,kafka-1:9093",
            redis__url="redis://redis:6380/0",
            model__registry={"trackingUri": "http://mlflow:5001", "name": "churn"},
        )
    )
    assert egress_ports(ctx, JOINER) == [6380, 9093]  # no MLflow for the joiner
    assert egress_ports(ctx, TRAINER) == [443, 5001, 6380, 9093]  # models in object storage


def test_inference_alone_reaches_feasts_online_store() -> None:
    ctx = BuildContext(sample("feast-features", feast={"redis": {"url": "redis://feast:6390/2"}}))
    assert egress_ports(ctx, INFERENCE) == [443, 5000, 6379, 6390, 9092]
    for part in (JOINER, TRAINER):
        assert 6390 not in egress_ports(ctx, part)


def test_only_inference_takes_client_traffic() -> None:
    ctx = BuildContext(sample("minimal"))
    inference = part_policy(ctx, INFERENCE)["spec"]["ingress"]
    joiner = part_policy(ctx, JOINER)["spec"]["ingress"]
    assert inference[0] == {"ports": [{"protocol": "TCP", "port": 8080}]}
    assert joiner == [
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 9100}]}
    ]
