"""Three joiner replicas in one consumer group, one killed mid-stream.

The join state lives in Redis, so any replica may take either side of a request;
the consumer group shares the partitions out. One replica is killed with SIGKILL
while all three work: after the session timeout the group hands its partitions to
the two left, which take over from its committed offsets (its Redis work half done is
found and finished by the outboxes). At the end every joinable request has exactly
one labeled example, and the live quality counts each join once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from driftline.api.parts import JOINER
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics
from driftline.local.servers import KafkaBroker, RedisServer, free_port
from tests.chaos.support import metric
from tests.integration.joiner.streams import (
    committed_offsets,
    read_to_end,
    wait_until,
    write_model,
)
from tests.integration.joiner.test_crash import Stream, ready, start_joiner

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

REPLICAS = 3


def test_three_replicas_one_killed_lose_nothing_and_double_nothing(
    tmp_path: Path, unique: str, kafka: KafkaBroker, redis_server: RedisServer, redis_client: Any
) -> None:
    rng = random.Random(int.from_bytes(unique.encode(), "little"))
    path = write_model(
        tmp_path / "model.yaml", unique, bootstrap_servers=kafka.bootstrap_servers,
        redis_url=redis_server.url, window=3600, partitions=REPLICAS,
    )  # fmt: skip
    conn = KafkaConnection(kafka.bootstrap_servers)
    predictions, outcomes = f"{unique}.predictions", f"{unique}.outcomes"
    labeled, dead_letter = f"{unique}.labeled", f"{unique}.dead-letter"
    ensure_topics(conn, [predictions, outcomes, labeled, dead_letter], partitions=REPLICAS)
    stream = Stream(conn, unique, predictions, outcomes)
    stream.send_all(rng)
    total = len(stream.landed)
    group = JOINER.group_id(unique)
    sources = [predictions, outcomes]

    def done() -> int:
        return sum(committed_offsets(conn, group, sources).values())

    replicas: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for i in range(REPLICAS):
            port = free_port()
            env = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "DRIFTLINE_JOINER_MODEL_FILE": str(path),
                "DRIFTLINE_JOINER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "DRIFTLINE_JOINER_REDIS_URL": redis_server.url,
                "DRIFTLINE_JOINER_METRICS_PORT": str(port),
                "DRIFTLINE_JOINER_BATCH_SIZE": "2",  # slow enough to kill mid-stream
                # SIGABRT then writes every thread's stack to the log (`stuck` below).
                "PYTHONFAULTHANDLER": "1",
            }
            replicas.append((start_joiner(env, tmp_path / f"joiner-{i}.log"), port))
        for _, port in replicas:
            wait_until(lambda port=port: ready(port), 60, "/readyz of every replica")

        def every_partition_moved() -> bool:
            committed = committed_offsets(conn, group, sources)
            return len([n for n in committed.values() if n > 0]) == 2 * REPLICAS

        def stuck() -> None:
            """Where things were when the replicas stopped moving (seen once in a CI run:
            one partition of six not committed in 120 s): each partition's committed
            offset, and each replica's threads (faulthandler, on SIGABRT) and last lines."""
            print("committed:", committed_offsets(conn, group, sources))
            for i, (joiner, _) in enumerate(replicas):
                if joiner.poll() is None:
                    joiner.send_signal(signal.SIGABRT)
                    joiner.wait(10)
                print(f"--- joiner-{i}\n" + (tmp_path / f"joiner-{i}.log").read_text()[-6000:])

        wait_until(
            every_partition_moved, 240, "every replica to work its partitions", on_timeout=stuck
        )
        before = done()
        assert before < total, "the stream was done before the kill"
        victim, _ = replicas[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        started = time.monotonic()
        wait_until(lambda: done() == total, 180, "the two left to finish the stream")
        took_over = time.monotonic() - started
        restarts = [
            metric(f"http://127.0.0.1:{port}/metrics", "driftline_joiner_consumer_restarts_total")
            for _, port in replicas[1:]
        ]
        for joiner, _ in replicas[1:]:
            joiner.send_signal(signal.SIGTERM)
        for i, (joiner, _) in enumerate(replicas[1:], start=1):
            assert joiner.wait(30) == 0, (tmp_path / f"joiner-{i}.log").read_text()[-3000:]
    finally:
        for joiner, _ in replicas:
            if joiner.poll() is None:
                joiner.kill()
                joiner.wait(10)

    stream.check_joined_once(conn, labeled, redis_client)
    assert len(read_to_end(conn, dead_letter)) >= stream.bad
    print(
        f"{total} records; killed one of {REPLICAS} at {before}; rest done in {took_over:.1f}s;"
        f" consumers started afresh: {restarts}"
    )
