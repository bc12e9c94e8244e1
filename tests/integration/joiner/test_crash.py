"""Crash test: `python -m driftline.joiner` killed with SIGKILL mid-stream, restarted.

Thousands of requests (served predictions, shadow predictions, outcomes, duplicates
of both, bad records) wait on the real broker; the joiner works through them in
small batches, so a kill lands in any phase of a batch: reading, in Redis,
sending, committing. After every kill, while it is down:

- offsets are never ahead of what was done: every record below a committed offset
  is in Redis, and every request whose served prediction and outcome are both below
  committed offsets has its labeled example in the topic.

At the end (SIGTERM, exit 0): every joinable request has exactly one labeled example
(none lost, none twice), and the live quality counters count each join once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from driftline.api.events import Outcome, Prediction, encode
from driftline.api.parts import JOINER
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_producer
from driftline.common.redis_state import QualityStore
from driftline.joiner.store import JoinStore
from driftline.local.servers import KafkaBroker, RedisServer, free_port
from tests.integration.joiner.streams import (
    committed_offsets,
    read_to_end,
    wait_until,
    write_model,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

REQUESTS = 5000
KILLS = 5
SEGMENT_BINS = [1000, 2500]
SEGMENT_CAP = 4


class Stream:
    """The records sent, and where each one landed (topic, partition, offset)."""

    def __init__(self, conn: KafkaConnection, model: str, predictions: str, outcomes: str):
        self.model, self.predictions, self.outcomes = model, predictions, outcomes
        self.producer = make_producer(conn, **{"linger.ms": 20})
        self.landed: dict[tuple[str, int, int], tuple[str, str]] = {}
        self.joinable: set[str] = set()
        self.shadowed: set[str] = set()
        self.bad = 0

    def _send(self, topic: str, request_id: str, field: str, value: bytes) -> None:
        def landed(err: Any, msg: Any) -> None:
            assert err is None, err
            self.landed[(msg.topic(), msg.partition(), msg.offset())] = (request_id, field)

        while True:
            try:
                self.producer.produce(
                    topic, key=request_id.encode(), value=value, on_delivery=landed
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def send_all(self, rng: random.Random) -> None:
        records: list[tuple[str, str, str, bytes]] = []
        for i in range(REQUESTS):
            rid = f"req-{i:05d}"
            served = "candidate" if i % 10 == 0 else "stable"
            variants = [served] + (["shadow"] if served == "stable" and i % 3 == 0 else [])
            for variant in variants:
                p = Prediction(
                    request_id=rid, model=self.model, variant=variant,  # type: ignore[arg-type]
                    model_version="2" if variant != "stable" else "1",
                    features={"x1": i, "x2": f"c{i % 7}"},
                    output=float(i % 2), ts=time.time(), scores=[0.4, 0.6],
                )  # fmt: skip
                records.append((self.predictions, rid, f"p:{variant}", encode(p)))
                if i % 17 == 0:  # a duplicate, as a producer retry or a replay makes them
                    records.append(records[-1])
            if i % 8 != 0:  # some outcomes never come
                o = encode(Outcome(request_id=rid, label=1.0, ts=time.time()))
                records.append((self.outcomes, rid, "o", o))
                if i % 13 == 0:
                    records.append(records[-1])
                self.joinable.add(rid)
                if "shadow" in variants:
                    self.shadowed.add(rid)
        # Either side may come first: shuffle within a sliding neighbourhood.
        keyed = sorted(enumerate(records), key=lambda r: r[0] + rng.uniform(0, 300))
        for n, (_, (topic, rid, field, value)) in enumerate(keyed):
            self._send(topic, rid, field, value)
            if n % 500 == 0:
                self._send(self.predictions, f"bad-{n}", "bad", b"{not json")
                self.bad += 1
        assert self.producer.flush(60) == 0

    def check_joined_once(self, conn: KafkaConnection, labeled: str, redis_client: Any) -> None:
        """Every joinable request has exactly one labeled example, and the live quality
        counts each join once (served: version 1 stable or 2 candidate; 2 in shadow)."""
        keys = Counter(m.key().decode() for m in read_to_end(conn, labeled))
        assert set(keys) == self.joinable, "lost or invented examples"
        twice = [k for k, n in keys.items() if n > 1]
        assert not twice, f"{len(twice)} examples emitted twice: {twice[:5]}"
        quality = QualityStore("test", self.model)
        now = time.time()
        stable = quality.counters("1", "stable").read(redis_client, 3600, now=now)
        candidate = quality.counters("2", "candidate").read(redis_client, 3600, now=now)
        shadow = quality.counters("2", "shadow").read(redis_client, 3600, now=now)
        assert stable["count"] + candidate["count"] == len(self.joinable)
        assert shadow["count"] == len(self.shadowed)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def start_joiner(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "driftline.joiner"], env=env, stdout=out, stderr=out
        )


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, unique: str, kafka: KafkaBroker, redis_server: RedisServer, redis_client: Any
) -> None:
    rng = random.Random(int.from_bytes(unique.encode(), "little"))
    path = write_model(
        tmp_path / "model.yaml", unique, bootstrap_servers=kafka.bootstrap_servers,
        redis_url=redis_server.url, window=3600, partitions=3,
        features=[{"name": "x1"}, {"name": "x2", "type": "categorical"}],
        monitoring={"segments": [
            {"name": "x1", "bins": SEGMENT_BINS},
            {"name": "x2", "maxValues": SEGMENT_CAP, "protected": True},
        ]},
    )  # fmt: skip
    conn = KafkaConnection(kafka.bootstrap_servers)
    predictions, outcomes = f"{unique}.predictions", f"{unique}.outcomes"
    labeled, dead_letter = f"{unique}.labeled", f"{unique}.dead-letter"
    ensure_topics(conn, [predictions, outcomes, labeled, dead_letter], partitions=3)
    stream = Stream(conn, unique, predictions, outcomes)
    stream.send_all(rng)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DRIFTLINE_JOINER_MODEL_FILE": str(path),
        "DRIFTLINE_JOINER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DRIFTLINE_JOINER_REDIS_URL": redis_server.url,
        "DRIFTLINE_JOINER_METRICS_PORT": str(port),
        # Tiny batches keep the joiner busy in every phase for seconds (a round trip
        # to the broker per batch): a kill lands in reading, Redis, sending or
        # committing alike.
        "DRIFTLINE_JOINER_BATCH_SIZE": "2",
    }
    group = JOINER.group_id(unique)
    sources = [predictions, outcomes]
    log = tmp_path / "joiner.log"
    store = JoinStore(redis_client, "test", unique, window=3600, grace=360)

    def done() -> int:
        return sum(committed_offsets(conn, group, sources).values())

    progress: list[int] = []
    for kill in range(KILLS):
        start = done()
        joiner = start_joiner(env, log)
        try:
            wait_until(lambda: done() > start, 90, f"progress before kill {kill + 1}")  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.6))
        finally:
            joiner.send_signal(signal.SIGKILL)
            joiner.wait(10)
        # While it is down: offsets are never ahead of what was done.
        committed = committed_offsets(conn, group, sources)
        emitted = {m.key().decode() for m in read_to_end(conn, labeled)}
        served_done: set[str] = set()
        outcome_done: set[str] = set()
        done_records = [
            (rid, field)
            for (topic, partition, offset), (rid, field) in stream.landed.items()
            if field != "bad" and offset < committed.get((topic, partition), 0)
        ]
        states = store.states(sorted({rid for rid, _ in done_records}))
        for rid, field in done_records:
            assert field in states[rid], (rid, field, "not in Redis")
            if field in ("p:stable", "p:candidate"):
                served_done.add(rid)
            elif field == "o":
                outcome_done.add(rid)
        missing = (served_done & outcome_done) - emitted
        assert not missing, f"committed past {len(missing)} unsent examples: {sorted(missing)[:5]}"
        progress.append(sum(committed.values()))

    total = len(stream.landed)
    assert progress[-1] < total, "the stream ended before the last kill"
    joiner = start_joiner(env, log)
    try:
        wait_until(lambda: ready(port), 60, "/readyz")
        wait_until(lambda: done() == total, 120, "the joiner to finish the stream")
        joiner.send_signal(signal.SIGTERM)
        assert joiner.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if joiner.poll() is None:  # a failed wait above: leave nothing running
            joiner.kill()
            joiner.wait(10)

    stream.check_joined_once(conn, labeled, redis_client)
    quality = QualityStore("test", unique)
    now = time.time()
    # Per segment, each join counted once too: exactly in each bin of x1, and in x2
    # within its cap of values (the rest in "other").
    served = {"1": "stable", "2": "candidate"}
    expected: Counter[tuple[str, str, str]] = Counter()
    for rid in stream.joinable:
        i = int(rid.split("-")[1])
        version = "2" if i % 10 == 0 else "1"
        group = "<1000" if i < 1000 else "[1000,2500)" if i < 2500 else ">=2500"
        expected[(version, group, "count")] += 1
        expected[(version, group, "correct")] += i % 2
    found: Counter[tuple[str, str, str]] = Counter()
    for version, variant in served.items():
        x1 = quality.read_segment(redis_client, version, variant, "x1", 3600, now=now)
        for group, stats in x1.items():
            found[(version, group, "count")] += int(stats.count)
            found[(version, group, "correct")] += int(stats.correct)
        x2 = quality.read_segment(redis_client, version, variant, "x2", 3600, now=now)
        assert len(set(x2) - {"other"}) <= SEGMENT_CAP
        assert sum(s.count for s in x2.values()) == sum(
            n for (v, _, field), n in expected.items() if v == version and field == "count"
        )
    assert found == +expected
    assert len(read_to_end(conn, dead_letter)) >= stream.bad
    recoveries = log.read_text().count("examples resent")
    print(f"{total} records, killed after {progress}; outboxes settled on restart: {recoveries}")
