"""Reading a topic in tests: every record it holds, then whatever else arrives soon."""

from __future__ import annotations

import time
import uuid
from typing import Any

from driftline.common.connections import KafkaConnection


def read_all(conn: KafkaConnection, topic: str, settle: float = 2.0) -> list[Any]:
    """Every record of `topic`: read outside any group from each partition's start
    to its end, then on until nothing new arrived for `settle` seconds.

    (Reading to each partition's end first matters: a reader that only waits for a
    quiet spell may give up before its first fetch answers, and miss records the
    topic holds.)"""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    reader = Consumer(
        conn.client_config(
            **{
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",  # never joined: `assign` only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log_level": 3,
            }
        )
    )
    records: list[Any] = []
    try:
        partitions = reader.list_topics(topic, timeout=30).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        quiet_since = time.monotonic()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for msg in reader.consume(1000, 0.2):
                err = msg.error()
                if err is None:
                    records.append(msg)
                    at_end.discard(msg.partition())
                    quiet_since = time.monotonic()
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    raise KafkaException(err)
            if len(at_end) < len(partitions):
                quiet_since = time.monotonic()  # not at every partition's end yet
            elif time.monotonic() - quiet_since >= settle:
                return records
        raise AssertionError(f"reading {topic} to its end took over 90 s")
    finally:
        reader.close()
