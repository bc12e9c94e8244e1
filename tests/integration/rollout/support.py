"""What the rollout driver's integration tests share: traffic, aliases, control events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from driftline.api import DynamicModel
from driftline.api.events import RolloutEvent, decode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_consumer
from driftline.common.redis_state import (
    QualityStore,
    ServingStore,
    latency_bucket,
    quality_fields,
    segment_field,
)
from driftline.local.servers.kafka import KafkaBroker

ModelFactory = Callable[..., DynamicModel]


def aliases(client: Any, name: str) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def control_events(kafka: KafkaBroker, topic: str, expected: int) -> list[RolloutEvent]:
    """Read the control topic from the beginning until `expected` events came."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = make_consumer(KafkaConnection(kafka.bootstrap_servers), f"{topic}-reader")
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    events: list[RolloutEvent] = []
    try:
        for _ in range(40):
            for msg in consumer.consume(100, 0.5):
                assert msg.error() is None, msg.error()
                events.append(decode(msg.value(), RolloutEvent))
            if len(events) >= expected:
                break
    finally:
        consumer.close()
    return events


class Traffic:
    """Writes live counters the way the joiner and inference do."""

    def __init__(self, client: Any, model: DynamicModel) -> None:
        self.client = client
        self.quality = QualityStore(model.metadata.namespace, model.name)
        self.serving = ServingStore(model.metadata.namespace, model.name)

    def labeled(self, version: str, variant: str, n: int, accuracy: float) -> None:
        pipe = self.client.pipeline()
        correct = round(n * accuracy)
        for i in range(n):
            label = 1.0
            output = 1.0 if i < correct else 0.0
            fields = quality_fields("classification", output, label, [1 - output, output])
            self.quality.counters(version, variant).add(pipe, fields)
        pipe.execute()

    def segment(
        self, version: str, variant: str, segment: str, value: str, n: int, accuracy: float
    ) -> None:
        """Labeled samples of one segment value, as the joiner counts them."""
        pipe = self.client.pipeline()
        fields = {"count": n, "correct": round(n * accuracy)}
        self.quality.segment(version, variant, segment).add(
            pipe, {segment_field(value, name): total for name, total in fields.items()}
        )
        pipe.execute()

    def served(self, version: str, variant: str, n: int, errors: int = 0, ms: float = 2) -> None:
        pipe = self.client.pipeline()
        self.serving.counters(version, variant).add(
            pipe, {"requests": n, "errors": errors, f"le_{latency_bucket(ms)}": n}
        )
        pipe.execute()

    def agreement(self, stable: str, candidate: str, compared: int, agreed: int) -> None:
        pipe = self.client.pipeline()
        self.quality.agreement(stable, candidate).add(
            pipe, {"compared": compared, "agreed": agreed}
        )
        pipe.execute()

    def stage(
        self, stage: str, stable: str, candidate: str, n: int = 25, accuracy: float = 0.9
    ) -> None:
        """One round of traffic for the stage: both versions labeled, the candidate served."""
        variant = "shadow" if stage == "shadow" else "candidate"
        self.labeled(stable, "stable", n, 0.9)
        self.labeled(candidate, variant, n, accuracy)
        self.served(candidate, variant, n)
        if stage == "shadow":
            self.agreement(stable, candidate, n, n - 1)
