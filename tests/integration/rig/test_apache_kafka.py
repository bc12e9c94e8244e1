"""Apache Kafka from the rig is the production broker: transactions isolate, and a
restart keeps committed records and committed consumer offsets (the embedded
Tansu broker does neither, which is why Driftline's effects are idempotent)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_consumer, make_producer
from driftline_testing.apache_kafka import ApacheKafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.rig]


def read_all(conn: KafkaConnection, topic: str, expect: int, **overrides: Any) -> list[bytes]:
    """Read `topic` from the start with a throwaway group until `expect` records came
    (or a quiet second passed after the deadline); returns the values in order."""
    consumer = make_consumer(conn, f"reader-{time.monotonic_ns()}", [topic], **overrides)
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(values) < expect:
            for msg in consumer.consume(100, 0.5):
                assert msg.error() is None, msg.error()
                values.append(msg.value())
        # Anything beyond `expect` would be a leak: give it a moment to show up.
        values.extend(m.value() for m in consumer.consume(100, 1.0) if m.error() is None)
    finally:
        consumer.close()
    return values


def test_read_committed_does_not_see_aborted_records(
    apache_broker: ApacheKafkaBroker, unique: str
) -> None:
    conn = KafkaConnection(apache_broker.bootstrap_servers)
    topic = f"{unique}.tx"
    ensure_topics(conn, [topic], partitions=1)
    producer = make_producer(conn, **{"transactional.id": f"{unique}-tx"})
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"aborted-{i}".encode())
    producer.flush(10)  # the records are in the log, inside an open transaction
    producer.abort_transaction(30)

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)

    committed = read_all(conn, topic, 3, **{"isolation.level": "read_committed"})
    assert committed == [f"committed-{i}".encode() for i in range(3)]
    # The aborted records were written: a read_uncommitted reader sees them.
    everything = read_all(conn, topic, 6, **{"isolation.level": "read_uncommitted"})
    assert [v for v in everything if v.startswith(b"aborted")] == [
        f"aborted-{i}".encode() for i in range(3)
    ]


def test_restart_keeps_committed_records_and_offsets(
    apache_broker: ApacheKafkaBroker, unique: str
) -> None:
    conn = KafkaConnection(apache_broker.bootstrap_servers)
    topic, group = f"{unique}.durable", f"{unique}-group"
    ensure_topics(conn, [topic], partitions=2)
    producer = make_producer(conn)
    for i in range(100):
        producer.produce(topic, key=f"k{i}", value=f"v{i}".encode())
    assert producer.flush(15) == 0

    consumer = make_consumer(conn, group, [topic])
    seen = 0
    try:
        deadline = time.monotonic() + 30
        while seen < 60 and time.monotonic() < deadline:
            batch = consumer.consume(min(20, 60 - seen), 0.5)
            for msg in batch:
                assert msg.error() is None
                consumer.store_offsets(msg)
            seen += len(batch)
            if batch:
                consumer.commit(asynchronous=False)
        assert seen == 60
    finally:
        consumer.close()

    apache_broker.restart()  # a clean stop and start on the same storage and ports

    # Committed records survived: a fresh group reads all 100.
    assert len(read_all(conn, topic, 100)) == 100
    # Committed offsets survived: the group resumes with exactly the 40 it never read.
    resumed = make_consumer(conn, group, [topic])
    rest: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(rest) < 40 and time.monotonic() < deadline:
            rest.extend(m.value() for m in resumed.consume(100, 0.5) if m.error() is None)
        rest.extend(m.value() for m in resumed.consume(100, 1.0) if m.error() is None)
    finally:
        resumed.close()
    assert len(rest) == 40
