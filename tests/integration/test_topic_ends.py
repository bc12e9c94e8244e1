"""Reading a topic to its end finds every record the broker acknowledged.

The embedded broker answers ListOffsets(latest) with one past the first offset of
a partition's last record batch: after one batch of ten records it says 1. A
reader that stops at that answer misses the rest of the batch, which once looked
like labeled examples lost by the joiner. `end_offsets` and `read_topic` take the
end from fetch answers instead; these tests hold them to every record on both
brokers, with batches of several records.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from driftline.common.connections import KafkaConnection
from driftline.common.kafka import end_offsets, ensure_topics, make_producer, read_topic
from driftline.local.servers import InfraError
from driftline.local.servers.kafka import KafkaBroker, TansuBroker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tansu() -> Iterator[KafkaBroker]:
    try:
        broker = TansuBroker().start()
    except InfraError as exc:
        pytest.skip(f"no embedded broker: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=["session broker", "embedded broker"])
def conn(request: pytest.FixtureRequest) -> KafkaConnection:
    """The session's broker (Apache Kafka where the rig is built), and the
    embedded one, which is the one ListOffsets misleads."""
    fixture = "kafka" if request.param == "session broker" else "tansu"
    broker: KafkaBroker = request.getfixturevalue(fixture)
    return KafkaConnection(broker.bootstrap_servers)


def send_batches(
    conn: KafkaConnection, topic: str, sizes: list[int], key: str = "k"
) -> dict[int, list[str]]:
    """Each size is sent as one flush (a record batch per partition); the values
    the broker acknowledged, by partition, in offset order."""
    producer = make_producer(conn, **{"linger.ms": 50})
    acked: dict[int, list[tuple[int, str]]] = {}

    def landed(err: object, msg: object) -> None:
        assert err is None, err
        acked.setdefault(msg.partition(), []).append((msg.offset(), msg.value().decode()))  # type: ignore[attr-defined]

    n = 0
    for size in sizes:
        for _ in range(size):
            producer.produce(topic, key=f"{key}{n}", value=f"v{n}".encode(), on_delivery=landed)
            n += 1
        assert producer.flush(15) == 0
    return {p: [v for _, v in sorted(values)] for p, values in acked.items()}


def test_the_end_of_a_partition_counts_every_record_of_its_last_batch(
    conn: KafkaConnection, unique: str
) -> None:
    topic = f"{unique}.batches"
    ensure_topics(conn, [topic], partitions=1)
    assert end_offsets(conn, topic) == {0: 0}
    assert read_topic(conn, topic) == []
    sent = 0
    for size in (10, 5, 1, 7):
        send_batches(conn, topic, [size])
        sent += size
        assert end_offsets(conn, topic) == {0: sent}
        assert [m.offset() for m in read_topic(conn, topic)] == list(range(sent))
    # From an offset inside the first batch: the rest of it and everything after.
    assert [m.offset() for m in read_topic(conn, topic, {0: 3})] == list(range(3, sent))


def test_read_topic_returns_every_acknowledged_record(conn: KafkaConnection, unique: str) -> None:
    topic = f"{unique}.many"
    ensure_topics(conn, [topic], partitions=3)
    rng = random.Random(unique)
    acked = send_batches(conn, topic, [rng.randint(20, 300) for _ in range(12)])
    records = read_topic(conn, topic)
    found: dict[int, list[str]] = {}
    for m in records:
        found.setdefault(m.partition(), []).append(m.value().decode())
    assert found == acked
    assert end_offsets(conn, topic) == {p: len(values) for p, values in acked.items()}
    # Starting past the beginning of one partition reads only what follows there.
    middle = len(acked[1]) // 2
    again = read_topic(conn, topic, {1: middle})
    assert [m.value().decode() for m in again if m.partition() == 1] == acked[1][middle:]
    assert sum(1 for m in again if m.partition() != 1) == len(acked[0]) + len(acked[2])
