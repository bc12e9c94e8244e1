"""Outcomes straight to Kafka, for tests that must know when each one was produced.

The demo's traffic sends outcomes through the outcomes route (`driftline.client`);
the chaos and hardening suites count what the broker acknowledged themselves, so
their traffic hands outcomes to a producer of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from driftline.api.events import Outcome, encode


class KafkaOutcomes:
    """A `driftline.local.traffic.OutcomeSink` producing each outcome to `topic`."""

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def send_outcomes(self, outcomes: Iterable[tuple[str, int | float]]) -> None:
        now = time.time()
        for request_id, label in outcomes:
            event = Outcome(request_id=request_id, label=label, ts=now)
            self.producer.produce(self.topic, key=request_id, value=encode(event))
        self.producer.poll(0)

    def close(self) -> None:
        self.producer.flush(10)
