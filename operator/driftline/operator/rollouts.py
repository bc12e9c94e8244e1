"""The rollout of each DynamicModel, run from the operator's timer.

The rollout is not a Deployment of its own: the operator already runs once per
cluster, holds the credentials, and writes the status the rollout is mirrored into.
Each model gets a `driftline.rollout` driver (the same one `driftline up` runs as a
process), kept between ticks because it holds the state in memory while Redis is
away; a changed spec (a new generation) builds a new driver, which resumes from the
record the old one saved in Redis.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from driftline.api import DynamicModel
from driftline.common.connections import KafkaConnection, RedisConnection
from driftline.common.kafka import make_producer
from driftline.rollout import RolloutState
from driftline.rollout.driver import RolloutDriver
from driftline.rollout.registry import ModelRegistry
from driftline.rollout.snapshot import Command

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 2.0


class LazyProducer:
    """A Kafka producer made on the first event: most ticks of most models publish
    nothing, and an idle producer per model would still hold broker connections."""

    def __init__(self, connection: KafkaConnection) -> None:
        self._connection = connection
        self._producer: Any = None

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self._producer is None:
            self._producer = make_producer(self._connection, **{"message.timeout.ms": 120_000})
        self._producer.produce(topic, **kwargs)

    def poll(self, timeout: float) -> int:
        return int(self._producer.poll(timeout)) if self._producer is not None else 0

    def flush(self, timeout: float) -> int:
        return int(self._producer.flush(timeout)) if self._producer is not None else 0


@dataclass
class _Entry:
    generation: int | None
    driver: RolloutDriver
    redis: Any


class Rollouts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drivers: dict[str, _Entry] = {}

    def _driver(
        self, model: DynamicModel, redis: RedisConnection, kafka: KafkaConnection | None
    ) -> RolloutDriver:
        key = model.metadata.uid or f"{model.metadata.namespace}/{model.name}"
        with self._lock:
            entry = self._drivers.get(key)
            if entry is not None and entry.generation == model.metadata.generation:
                return entry.driver
        if entry is not None:
            self._close(entry)
        client = redis.client(
            socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        registry = ModelRegistry(
            model.spec.model.registry.tracking_uri, model.spec.model.registry.name
        )
        producer = LazyProducer(kafka) if kafka is not None else None
        driver = RolloutDriver(model, client, registry, producer)
        with self._lock:
            self._drivers[key] = _Entry(model.metadata.generation, driver, client)
        return driver

    def tick(
        self,
        model: DynamicModel,
        redis: RedisConnection,
        kafka: KafkaConnection | None,
        command: Command | None = None,
    ) -> RolloutState | None:
        """One step of this model's rollout, taking `command` (a person's decision) first;
        its state, or None while it cannot be known."""
        try:
            driver = self._driver(model, redis, kafka)
            if command is not None:
                driver.send_command(command)
            driver.tick()
        except Exception:  # a failing rollout tick must not stop status or other models
            log.exception("%s/%s: rollout tick failed", model.metadata.namespace, model.name)
            return None
        return driver.state

    def candidate(self, model: DynamicModel) -> tuple[bool, str | None]:
        """(whether the model's rollout state is known yet, its active candidate)."""
        key = model.metadata.uid or f"{model.metadata.namespace}/{model.name}"
        with self._lock:
            entry = self._drivers.get(key)
        state = entry.driver.state if entry is not None else None
        if state is None:
            return False, None
        return True, state.candidate if state.active else None

    def forget(self, model: DynamicModel) -> None:
        key = model.metadata.uid or f"{model.metadata.namespace}/{model.name}"
        with self._lock:
            entry = self._drivers.pop(key, None)
        if entry is not None:
            self._close(entry)

    def close(self) -> None:
        with self._lock:
            entries = list(self._drivers.values())
            self._drivers.clear()
        for entry in entries:
            self._close(entry)

    @staticmethod
    def _close(entry: _Entry) -> None:
        try:
            entry.driver.close(timeout=2.0)
            entry.redis.close()
        except Exception as exc:
            log.debug("closing a rollout driver: %s", exc)
