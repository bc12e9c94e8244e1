"""The operator keeps one rollout driver per model; idle models hold no Kafka producer."""

from __future__ import annotations

from driftline.common.connections import KafkaConnection
from driftline.operator.rollouts import LazyProducer


def test_no_producer_until_an_event_is_published() -> None:
    producer = LazyProducer(KafkaConnection("127.0.0.1:9"))
    assert producer.poll(0) == 0
    assert producer.flush(0.1) == 0
    assert producer._producer is None  # nothing connected for a model that never rolls out
