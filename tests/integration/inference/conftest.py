"""Fixtures for the inference service against real MLflow, Redis and a Kafka broker.

`serve(...)` runs the real app on a loopback port in the test process (see
`harness.py`); `publish` registers model versions in MLflow the way the trainer does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from driftline.api import parse_dynamic_model
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_consumer
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer
from driftline.local.servers.kafka import KafkaBroker
from driftline_testing.models import (
    mlp_model,
    model_document,
    register_version,
)
from tests.integration.inference.harness import Running, servers

# Versions that always answer class 0 or class 1: which model answered shows in the output.
SAYS_0 = (8.0, -8.0)
SAYS_1 = (-8.0, 8.0)


@pytest.fixture
def model_doc(
    unique: str, mlflow_server: MlflowServer, redis_server: RedisServer, kafka: KafkaBroker
) -> dict[str, Any]:
    return model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        inference={"batching": {"maxBatchSize": 32, "maxDelayMs": 1}, "baseline": False},
    )


@pytest.fixture
def contract(model_doc: dict[str, Any]) -> FeatureContract:
    return FeatureContract(parse_dynamic_model(model_doc).spec)


@pytest.fixture
def publish(
    mlflow_server: MlflowServer, model_doc: dict[str, Any], contract: FeatureContract
) -> Callable[..., str]:
    """publish(bias, aliases=(), sha256=None) -> the new version number."""

    def register(
        bias: Sequence[float] = SAYS_0, aliases: Sequence[str] = (), sha256: str | None = None
    ) -> str:
        return register_version(
            mlflow_server.tracking_uri,
            model_doc["spec"]["model"]["registry"]["name"],
            mlp_model(contract, output_bias=bias),
            aliases=aliases,
            sha256=sha256,
        )

    return register


@pytest.fixture
def serve(tmp_path: Path, model_doc: dict[str, Any]) -> Iterator[Callable[..., Running]]:
    """serve(doc=None, wait_ready=True, **settings) -> a running server (stopped afterwards)."""
    with servers(tmp_path) as start:
        yield lambda doc=None, **settings: start(doc or model_doc, **settings)


def read_predictions(
    kafka: KafkaBroker, topic: str, count: int, timeout: float = 30.0
) -> list[Any]:
    """Read `count` records of `topic` from its start (fewer when the time runs out)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = make_consumer(
        KafkaConnection(kafka.bootstrap_servers), f"reader-{topic}-{time.monotonic_ns()}"
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            records += [m for m in consumer.consume(500, 0.5) if m.error() is None]
        return records
    finally:
        consumer.close()
