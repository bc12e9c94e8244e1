"""Kafka clients the way every Driftline part uses them.

- Producers are idempotent (`enable.idempotence`), so a retried send never
  duplicates a record within a producer session.
- Consumers never auto-commit: a part commits offsets only after the effects of
  the records are durable (at-least-once delivery, exactly-once in effect through
  idempotent writes keyed by request id).
- Consumers read with `consume(n)` batches, never one `poll()` per record.
- Group timeouts are short (session 6 s, heartbeat 0.5 s): a restarted part rejoins
  in seconds instead of the ~25 s librdkafka's defaults cost.
- A record that cannot be decoded goes to the dead-letter topic with the reason in
  its headers, is counted, and the stream goes on.
- Where a topic ends is learned from fetch answers (`end_offsets`, `read_topic`),
  never from ListOffsets alone: the embedded broker answers ListOffsets(latest)
  with one past the *first* offset of a partition's last record batch, so a reader
  that stops there misses the rest of that batch. (Apache Kafka answers both alike.)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter

from driftline.common.connections import KafkaConnection
from driftline.common.metrics import DEAD_LETTER_TOTAL

log = logging.getLogger(__name__)

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "partition.assignment.strategy": "cooperative-sticky",
    "log_level": 4,
}

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "log_level": 4,
}

_dead_letter_counter = Counter(
    DEAD_LETTER_TOTAL,
    "Messages sent to the dead-letter topic, by source topic and reason class.",
    ["topic", "reason"],
)


def _debug() -> dict[str, Any]:
    """`DRIFTLINE_KAFKA_DEBUG=cgrp,fetch` (librdkafka's debug contexts) logs what the
    client does inside: rebalances, fetches, commits. Off by default: it is verbose."""
    contexts = os.environ.get("DRIFTLINE_KAFKA_DEBUG", "").strip()
    return {"debug": contexts, "log_level": 7} if contexts else {}


def make_producer(conn: KafkaConnection, **overrides: Any) -> Any:
    from confluent_kafka import Producer

    return Producer(conn.client_config(**{**PRODUCER_DEFAULTS, **_debug(), **overrides}))


def make_consumer(
    conn: KafkaConnection, group_id: str, topics: Iterable[str] | None = None, **overrides: Any
) -> Any:
    from confluent_kafka import Consumer

    consumer = Consumer(
        conn.client_config(**{**CONSUMER_DEFAULTS, "group.id": group_id, **_debug(), **overrides})
    )
    if topics is not None:
        consumer.subscribe(list(topics))
    return consumer


def ensure_topics(
    conn: KafkaConnection, topics: Iterable[str], partitions: int = 3, timeout: float = 15.0
) -> None:
    """Create the topics that do not exist yet (an existing topic is left as it is)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(conn.client_config())
    wanted = sorted(set(topics))
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing],
        request_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        log.info("created topic %s (%d partitions)", topic, partitions)


# -- a topic's end -------------------------------------------------------------------


def _reader(conn: KafkaConnection) -> Any:
    """A consumer outside any group that reports each partition's end (EOF)."""
    from confluent_kafka import Consumer

    return Consumer(
        conn.client_config(
            **{
                "group.id": "driftline-reader",  # required, never joined: `assign` only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # A start offset the log no longer holds reads from what it holds.
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )
    )


def _partitions(reader: Any, topic: str, timeout: float) -> list[int]:
    from confluent_kafka import KafkaException

    meta = reader.list_topics(topic, timeout=timeout)
    found = meta.topics.get(topic)
    if found is None or found.error is not None:
        raise KafkaException(found.error if found is not None else f"no topic {topic}")
    return sorted(found.partitions)


def _read_until_eof(
    reader: Any, topic: str, starts: Mapping[int, int], timeout: float, keep: bool
) -> tuple[list[Any], dict[int, int]]:
    """Consume the assigned partitions until each reports its end; the records read
    (when `keep`) and each partition's end offset."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    reader.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    records: list[Any] = []
    ends: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(ends) < len(starts):
        if time.monotonic() > deadline:
            missing = sorted(set(starts) - set(ends))
            raise TimeoutError(f"reading {topic} to its end timed out (partitions {missing})")
        for msg in reader.consume(1000, 0.5):
            err = msg.error()
            if err is None:
                if keep:
                    records.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                ends[msg.partition()] = msg.offset()  # the offset the end was reached at
            else:
                raise KafkaException(err)
    return records, ends


def end_offsets(conn: KafkaConnection, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Each partition's end offset (the next offset to be written), as a fetch
    reports it: reading starts at ListOffsets' answer, so at most the partition's
    last batch is read again."""
    from confluent_kafka import OFFSET_END

    reader = _reader(conn)
    try:
        partitions = _partitions(reader, topic, timeout)
        return _read_until_eof(reader, topic, dict.fromkeys(partitions, OFFSET_END), timeout,
                               keep=False)[1]  # fmt: skip
    finally:
        reader.close()


def read_topic(
    conn: KafkaConnection,
    topic: str,
    start_offsets: Mapping[int, int] | None = None,
    timeout: float = 30.0,
) -> list[Any]:
    """The records of `topic` from `start_offsets` (each partition's beginning where
    absent) to its end when each partition is reached, read outside any group.
    Raises TimeoutError when that takes longer than `timeout`."""
    from confluent_kafka import OFFSET_BEGINNING

    starts = start_offsets or {}
    reader = _reader(conn)
    try:
        partitions = _partitions(reader, topic, timeout)
        begin = {p: starts.get(p, OFFSET_BEGINNING) for p in partitions}
        return _read_until_eof(reader, topic, begin, timeout, keep=True)[0]
    finally:
        reader.close()


class DeadLetters:
    """Sends bad records to the dead-letter topic (when configured) and counts them.

    The record's value and key are kept byte for byte; the reason and the record's
    origin travel in headers, so nothing is lost and the cause is visible.
    """

    def __init__(self, producer: Any | None, topic: str | None) -> None:
        self._producer = producer
        self._topic = topic

    def send(self, msg: Any, reason: str) -> None:
        source = msg.topic() or "?"
        _dead_letter_counter.labels(source, reason.split(":", 1)[0][:64]).inc()
        log.warning("dead letter from %s[%s]@%s: %s", source, msg.partition(), msg.offset(), reason)
        if self._producer is None or self._topic is None:
            return
        self._producer.produce(
            self._topic,
            key=msg.key(),
            value=msg.value(),
            headers=[
                ("driftline-error", reason.encode()[:1024]),
                ("driftline-source-topic", source.encode()),
                ("driftline-source-partition", str(msg.partition()).encode()),
                ("driftline-source-offset", str(msg.offset()).encode()),
            ],
        )

    @staticmethod
    def count(source: str, reason: str) -> float:
        """How many records from `source` were dead-lettered for `reason` so far."""
        value = REGISTRY.get_sample_value(DEAD_LETTER_TOTAL, {"topic": source, "reason": reason})
        return value or 0.0
