"""Building blocks of the joiner tests: a model file, events, and reading topics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from driftline.api.events import Outcome, Prediction, Variant, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_producer, read_topic
from tests import polling


def write_model(
    path: Path,
    name: str,
    *,
    bootstrap_servers: str,
    redis_url: str,
    window: float = 3600,
    task: str = "classification",
    partitions: int = 3,
    features: list[dict[str, Any]] | None = None,
    monitoring: dict[str, Any] | None = None,
) -> Path:
    """A DynamicModel YAML for one test: its own topics (named after the model)."""
    doc = {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "model": {
                "registry": {"trackingUri": "http://127.0.0.1:1", "name": name},
                "task": task,
            },
            "features": features or [{"name": "x1"}, {"name": "x2"}],
            "kafka": {"bootstrapServers": bootstrap_servers, "partitions": partitions},
            "redis": {"url": redis_url},
            "feedback": {"joinWindowSeconds": window},
            **({"monitoring": monitoring} if monitoring else {}),
        },
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def prediction(
    model: str,
    request_id: str,
    variant: Variant = "stable",
    version: str = "1",
    output: float = 1.0,
    scores: list[float] | None = None,
) -> Prediction:
    return Prediction(
        request_id=request_id,
        model=model,
        model_version=version,
        variant=variant,
        features={"x1": 1.5, "x2": 2.5},
        output=output,
        ts=time.time(),
        entity_id=f"e-{request_id}",
        scores=scores,
    )


def outcome(request_id: str, label: float = 1.0) -> Outcome:
    return Outcome(request_id=request_id, label=label, ts=time.time())


@dataclass
class Records:
    """Sends raw or encoded events keyed by request id."""

    conn: KafkaConnection
    producer: Any = None

    def __post_init__(self) -> None:
        self.producer = make_producer(self.conn, **{"linger.ms": 20})

    def send(self, topic: str, event: Prediction | Outcome) -> None:
        self.raw(topic, event.request_id.encode(), encode(event))

    def raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value)
                return
            except BufferError:
                self.producer.poll(0.05)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def committed_offsets(
    conn: KafkaConnection, group: str, topics: list[str]
) -> dict[tuple[str, int], int]:
    """The group's committed offset per partition (absent: nothing committed)."""
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer(conn.client_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        parts = []
        for topic in topics:
            meta = reader.list_topics(topic, timeout=10)
            parts += [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in reader.committed(parts, timeout=15)
            if tp.offset >= 0
        }
    finally:
        reader.close()


wait_until = polling.wait_until


def read_to_end(conn: KafkaConnection, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record of `topic` up to its current end, read without a consumer group."""
    return read_topic(conn, topic, timeout=timeout)
