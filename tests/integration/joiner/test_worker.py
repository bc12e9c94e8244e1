"""The joiner worker against a real broker and Redis, in this process (threads)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace
from prometheus_client import REGISTRY

from driftline.common.connections import KafkaConnection
from driftline.common.redis_state import QualityStore
from driftline.joiner.metrics import (
    CALIBRATION_ERROR,
    CALIBRATION_LIMIT,
    CONFIDENCE_GAP,
    EXPIRED_TOTAL,
    FAIRNESS_LIMIT,
    FAIRNESS_OPPORTUNITY_GAP,
    FAIRNESS_PARITY_GAP,
    MESSAGES_TOTAL,
    SEGMENT_FOLDED_TOTAL,
    SEGMENT_QUALITY_TOTAL,
)
from driftline.joiner.settings import JoinerSettings
from driftline.joiner.worker import JoinerWorker
from driftline.local.servers import KafkaBroker, RedisServer
from tests.integration.joiner.streams import (
    Records,
    outcome,
    prediction,
    wait_until,
    write_model,
)
from tests.topics import read_all

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def running(
    tmp_path: Path, unique: str, kafka: KafkaBroker, redis_server: RedisServer, redis_client: Any
) -> Iterator[Any]:
    """Start a worker (window 60 s on a clock the test moves) and stop it after."""
    started: list[tuple[threading.Event, threading.Thread]] = []

    def start(
        window: float = 60,
        clock: Clock | None = None,
        settings: dict[str, Any] | None = None,
        **model: Any,
    ) -> JoinerWorker:
        path = write_model(
            tmp_path / "model.yaml",
            unique,
            bootstrap_servers=kafka.bootstrap_servers,
            redis_url=redis_server.url,
            window=window,
            partitions=2,
            **model,
        )
        joiner = JoinerSettings(
            model_file=path,
            metrics_port=0,
            grace_seconds=30,
            sweep_interval_seconds=0.2,
            fairness_interval_seconds=0.2,
            **(settings or {}),
        )
        worker = JoinerWorker(joiner, clock=clock or Clock(1_000_000.0))
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        started.append((stop, thread))
        wait_until(lambda: worker.heartbeat.ready, 30, "the worker to be ready")
        return worker

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def test_joins_each_request_once_and_scores_every_variant(
    running: Any, unique: str, kafka: KafkaBroker, redis_client: Any
) -> None:
    clock = Clock(1_000_000.0)
    worker = running(clock=clock)
    conn = KafkaConnection(kafka.bootstrap_servers)
    topics = worker.topics
    records = Records(conn)
    for i in range(40):
        rid = f"r{i}"
        records.send(topics.predictions, prediction(unique, rid, "stable", "1", i % 2, [0.5, 0.5]))
        if i % 4 == 0:  # shadow: the candidate scored beside the served stable version
            shadow_output = 0.0 if i % 8 == 0 else 1.0  # agrees with stable (0) half the time
            records.send(topics.predictions, prediction(unique, rid, "shadow", "2", shadow_output))
        if i % 5 == 0:
            records.send(topics.predictions, prediction(unique, rid, "stable", "1", i % 2))
        records.send(topics.outcomes, outcome(rid, 1.0))
        if i % 7 == 0:
            records.send(topics.outcomes, outcome(rid, 1.0))
    # A request served by the candidate (canary), its outcome first.
    records.send(topics.outcomes, outcome("canary-1", 0.0))
    records.send(topics.predictions, prediction(unique, "canary-1", "candidate", "2", 0.0))
    records.flush()

    def labeled() -> list[Any]:
        return read_all(conn, topics.labeled, settle=1.0)

    wait_until(lambda: len({m.key() for m in labeled()}) == 41, 60, "41 labeled examples")
    examples = labeled()
    keys = Counter(m.key().decode() for m in examples)
    assert max(keys.values()) == 1, "an example was emitted twice"
    assert keys["canary-1"] == 1

    quality = QualityStore("test", unique)
    stable = quality.counters("1", "stable").read(redis_client, 600, now=clock.now)
    assert stable["count"] == 40
    assert stable["correct"] == 20  # outputs alternate 0/1, labels are all 1
    assert stable["log_loss_count"] == 40
    assert quality.counters("2", "shadow").read(redis_client, 600, now=clock.now)["count"] == 10
    assert quality.counters("2", "candidate").read(redis_client, 600, now=clock.now) == {
        "count": 1.0,
        "correct": 1.0,
    }
    compared, agreed = (
        quality.agreement("1", "2").read(redis_client, 600, now=clock.now).get(f, 0)
        for f in ("compared", "agreed")
    )
    assert (compared, agreed) == (10, 5)


def test_bad_late_and_expired_records_are_counted_and_dead_lettered(
    running: Any, unique: str, kafka: KafkaBroker, redis_client: Any
) -> None:
    clock = Clock(2_000_000.0)
    worker = running(window=60, clock=clock)
    conn = KafkaConnection(kafka.bootstrap_servers)
    topics = worker.topics
    records = Records(conn)
    records.raw(topics.predictions, b"k1", b"not json")
    records.raw(topics.outcomes, b"k2", b'{"v": 9, "request_id": "k2", "label": 1, "ts": 1}')
    records.send(topics.predictions, prediction("another-model", "k3"))
    records.send(topics.predictions, prediction(unique, "late-1"))
    records.send(topics.predictions, prediction(unique, "never-1"))
    records.flush()
    state = f"driftline:test:{unique}:joiner:req:"
    wait_until(lambda: redis_client.exists(state + "late-1", state + "never-1") == 2, 60, "state")
    clock.now += 61  # past the window of both predictions, inside the grace period
    records.send(topics.outcomes, outcome("late-1"))
    records.flush()

    wait_until(lambda: len(read_all(conn, topics.dead_letter, settle=1.0)) == 4, 60, "4 dead")
    reasons = {
        m.key(): dict(m.headers())["driftline-error"].decode()
        for m in read_all(conn, topics.dead_letter, settle=0.5)
    }
    assert reasons[b"k1"].startswith("not JSON")
    assert "schema version 9" in reasons[b"k2"]
    assert reasons[b"k3"].startswith("wrong model")
    assert reasons[b"late-1"].startswith("late: outcome")
    assert read_all(conn, topics.labeled, settle=0.5) == []
    wait_until(lambda: sample(EXPIRED_TOTAL, side="prediction") >= 2, 10, "expiry counted")
    assert sample(MESSAGES_TOTAL, side="outcome", result="late") >= 1
    assert sample(MESSAGES_TOTAL, side="prediction", result="invalid") >= 2


def test_a_prediction_replayed_after_its_outcome_still_joins_inside_the_window(
    running: Any, unique: str, kafka: KafkaBroker, redis_client: Any
) -> None:
    """Inference spools its predictions while the broker is away and replays them
    when it is back, after the application sent their outcomes: the outcome opened
    the window, and a prediction arriving before that window ends joins it."""
    clock = Clock(3_000_000.0)
    worker = running(window=60, clock=clock)
    conn = KafkaConnection(kafka.bootstrap_servers)
    topics = worker.topics
    records = Records(conn)
    for rid in ("replayed-1", "replayed-2", "too-late-1"):
        records.send(topics.outcomes, outcome(rid, 1.0))
    records.flush()
    state = f"driftline:test:{unique}:joiner:req:"
    wait_until(lambda: redis_client.exists(*(state + r for r in ("replayed-1", "too-late-1"))) == 2,
               60, "the outcomes' state")  # fmt: skip
    clock.now += 50  # the outage: well inside the 60 s window the outcomes opened
    for rid in ("replayed-1", "replayed-2"):
        late = prediction(unique, rid, "stable", "1", 1.0, [0.1, 0.9])
        # Answered before its outcome was sent, a minute ago.
        records.send(topics.predictions, msgspec.structs.replace(late, ts=late.ts - 55))
    records.flush()
    wait_until(lambda: len(read_all(conn, topics.labeled, settle=0.5)) == 2, 60, "2 examples")
    clock.now += 15  # past the window of the third outcome
    records.send(topics.predictions, prediction(unique, "too-late-1", "stable", "1", 1.0))
    records.flush()
    wait_until(lambda: sample(MESSAGES_TOTAL, side="prediction", result="late") >= 1, 30, "late")
    examples = read_all(conn, topics.labeled, settle=1.0)
    assert sorted(m.key().decode() for m in examples) == ["replayed-1", "replayed-2"]


def test_a_redis_outage_pauses_the_joiner_and_loses_nothing_after(
    tmp_path: Path, unique: str, kafka: KafkaBroker
) -> None:
    """Redis goes away mid-stream: the joiner is not ready and retries, it does not
    crash or skip records; when Redis is back it joins what arrived meanwhile."""
    from driftline.local.servers import RedisServer

    redis = RedisServer().start()
    try:
        path = write_model(
            tmp_path / "model.yaml", unique, bootstrap_servers=kafka.bootstrap_servers,
            redis_url=redis.url, partitions=2,
        )  # fmt: skip
        settings = JoinerSettings(model_file=path, metrics_port=0, retry_backoff_seconds=0.2)
        worker = JoinerWorker(settings)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        wait_until(lambda: worker.heartbeat.ready, 30, "the worker to be ready")
        conn = KafkaConnection(kafka.bootstrap_servers)
        records = Records(conn)
        topics = worker.topics

        def send(first: int, last: int) -> None:
            for i in range(first, last):
                records.send(topics.predictions, prediction(unique, f"r{i}"))
                records.send(topics.outcomes, outcome(f"r{i}"))
            records.flush()

        def labeled() -> set[bytes]:
            return {m.key() for m in read_all(conn, topics.labeled, settle=1.0)}

        send(0, 20)
        wait_until(lambda: len(labeled()) == 20, 60, "the first 20 examples")
        redis.stop()
        send(20, 30)
        wait_until(lambda: not worker.heartbeat.ready, 30, "the worker to report not ready")
        assert thread.is_alive()
        redis = RedisServer(port=redis.port).start()  # back, empty: what came meanwhile joins
        wait_until(lambda: len(labeled()) == 30, 60, "the 10 examples sent during the outage")
        assert worker.heartbeat.ready
        assert sample("driftline_joiner_batch_retries_total", cause="redis") >= 1
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        redis.stop()


def test_quality_per_segment_with_a_cap_and_the_fairness_gaps(
    running: Any, unique: str, kafka: KafkaBroker, redis_client: Any
) -> None:
    clock = Clock(1_000_000.0)
    worker = running(
        clock=clock,
        features=[{"name": "x1"}, {"name": "x2", "type": "categorical"}],
        monitoring={
            "segments": [
                {"name": "x1", "bins": [0.5]},
                {"name": "x2", "maxValues": 2, "protected": True},
            ],
            "fairness": {"minSamples": 5, "maxParityGap": 0.2, "maxOpportunityGap": 0.3},
        },
    )
    conn = KafkaConnection(kafka.bootstrap_servers)
    topics = worker.topics
    records = Records(conn)

    def send(rid: str, group: str, output: float, x1: float) -> None:
        p = prediction(unique, rid, "stable", "1", output)
        records.send(topics.predictions, replace(p, features={"x1": x1, "x2": group}))
        records.send(topics.outcomes, outcome(rid, 1.0))

    # Group a: always predicted positive; group b: half the time. Every label is 1.
    for i in range(20):
        send(f"a{i}", "a", 1.0, 0.2)
        send(f"b{i}", "b", float(i % 2), 0.8)
    records.flush()
    wait_until(lambda: len(read_all(conn, topics.labeled, settle=0.5)) == 40, 60, "40 examples")
    # The cap (2 values) is taken: a third value counts as "other".
    for i in range(6):
        send(f"c{i}", "c", 0.0, 0.8)
    records.flush()
    wait_until(lambda: len(read_all(conn, topics.labeled, settle=0.5)) == 46, 60, "46 examples")

    quality = QualityStore("test", unique)
    x2 = quality.read_segment(redis_client, "1", "stable", "x2", 600, now=clock.now)
    assert {v: s.count for v, s in x2.items()} == {"a": 20, "b": 20, "other": 6}
    assert (x2["a"].positive_rate, x2["b"].positive_rate, x2["b"].recall) == (1.0, 0.5, 0.5)
    assert x2["b"].precision == 1.0
    x1 = quality.read_segment(redis_client, "1", "stable", "x1", 600, now=clock.now)
    assert {v: (s.count, s.correct) for v, s in x1.items()} == {
        "<0.5": (20, 20), ">=0.5": (26, 10),
    }  # fmt: skip
    # Prometheus: per-segment sums, values folded into "other", the gaps and limits.
    labels = {"version": "1", "variant": "stable", "segment": "x2"}
    assert sample(SEGMENT_QUALITY_TOTAL, **labels, value="b", field="true_positive") == 10
    assert sample(SEGMENT_QUALITY_TOTAL, **labels, value="other", field="count") == 6
    assert sample(SEGMENT_FOLDED_TOTAL, segment="x2") == 6
    clock.now += 1  # the gauges are read from Redis on the sweeps, which follow the clock
    wait_until(
        lambda: sample(FAIRNESS_PARITY_GAP, version="1", segment="x2") == 0.5,
        10,
        "the parity gap",
    )
    assert sample(FAIRNESS_OPPORTUNITY_GAP, version="1", segment="x2") == 0.5
    assert sample(FAIRNESS_LIMIT, segment="x2", figure="parity") == 0.2
    assert sample(FAIRNESS_LIMIT, segment="x2", figure="opportunity") == 0.3
    assert REGISTRY.get_sample_value(FAIRNESS_PARITY_GAP, {"version": "1", "segment": "x1"}) is None


def test_calibration_of_an_overconfident_version_is_measured_from_redis(
    running: Any, unique: str, kafka: KafkaBroker, redis_client: Any
) -> None:
    """Version 1 answers with 0.9 confidence and is right 60 % of the time; version 2
    is right as often as it says (0.7, 70 %). The gauges are summed from Redis."""
    clock = Clock(2_000_000.0)
    worker = running(clock=clock, monitoring={"calibration": {"minSamples": 20, "maxError": 0.15}})
    conn = KafkaConnection(kafka.bootstrap_servers)
    topics = worker.topics
    records = Records(conn)
    for i in range(50):
        for version, variant, confidence, right in (
            ("1", "stable", 0.9, i % 10 < 6),
            ("2", "candidate", 0.7, i % 10 < 7),
        ):
            rid = f"v{version}-{i}"
            scores = [1 - confidence, confidence]
            records.send(topics.predictions, prediction(unique, rid, variant, version, 1.0, scores))
            records.send(topics.outcomes, outcome(rid, 1.0 if right else 0.0))
    records.flush()
    wait_until(lambda: len(read_all(conn, topics.labeled, settle=0.5)) == 100, 60, "100 examples")
    clock.now += 1  # the gauges are read from Redis on the sweeps, which follow the clock

    def measured(version: str) -> float | None:
        return REGISTRY.get_sample_value(CALIBRATION_ERROR, {"version": version})

    wait_until(lambda: measured("1") is not None and measured("2") is not None, 10, "gauges")
    assert measured("1") == pytest.approx(0.3)
    assert sample(CONFIDENCE_GAP, version="1") == pytest.approx(0.3)
    assert measured("2") == pytest.approx(0.0, abs=1e-9)
    assert REGISTRY.get_sample_value(CALIBRATION_LIMIT) == 0.15


def test_explored_predictions_reach_the_labeled_example_and_count_apart(
    running: Any, unique: str, kafka: KafkaBroker, redis_client: Any
) -> None:
    clock = Clock(1_000_000.0)
    worker = running(clock=clock)
    conn = KafkaConnection(kafka.bootstrap_servers)
    topics = worker.topics
    records = Records(conn)
    for i in range(10):
        served = prediction(unique, f"x{i}", "stable", "1", 1.0, [0.2, 0.8])
        if i < 4:  # the uniform policy answered class 0; the model said 1
            served = replace(served, explored=True, served=0.0, propensity=0.05)
        else:
            served = replace(served, propensity=0.95)
        records.send(topics.predictions, served)
        records.send(topics.outcomes, outcome(f"x{i}", 1.0))
    records.flush()
    wait_until(lambda: len(read_all(conn, topics.labeled, settle=0.5)) == 10, 60, "10 examples")
    examples = [msgspec.json.decode(m.value()) for m in read_all(conn, topics.labeled)]
    flagged = {e["request_id"]: (e["explored"], e["served"], e["propensity"]) for e in examples}
    assert flagged["x0"] == (True, 0.0, 0.05)
    assert flagged["x9"] == (False, None, 0.95)

    quality = QualityStore("test", unique)
    own = quality.counters("1", "stable").read(redis_client, 600, now=clock.now)
    explored = quality.counters("1", "explored").read(redis_client, 600, now=clock.now)
    assert (own["count"], explored["count"], explored["correct"]) == (6, 4, 4)


def test_a_consumer_standing_still_behind_the_end_is_started_afresh(
    running: Any, unique: str, kafka: KafkaBroker
) -> None:
    """A partition its consumer stops fetching (here: paused from outside, as a client
    stuck after a rebalance would leave it) is noticed after `stall_seconds`: the
    consumer is closed, a new one joins, and every request is joined once."""
    from confluent_kafka import TopicPartition

    worker = running(settings={"stall_seconds": 4.0})
    conn = KafkaConnection(kafka.bootstrap_servers)
    topics = worker.topics
    wait_until(lambda: len(worker.consumer.assignment()) == 4, 30, "four partitions assigned")
    before = sample("driftline_joiner_consumer_restarts_total")
    stuck = worker.consumer
    stuck.pause([TopicPartition(topics.predictions, 0), TopicPartition(topics.predictions, 1)])
    records = Records(conn)
    for i in range(30):
        records.send(topics.predictions, prediction(unique, f"r{i}"))
        records.send(topics.outcomes, outcome(f"r{i}"))
    records.flush()

    def labeled() -> list[Any]:
        return read_all(conn, topics.labeled, settle=1.0)

    wait_until(lambda: len({m.key() for m in labeled()}) == 30, 60, "30 labeled examples")
    assert worker.consumer is not stuck
    assert sample("driftline_joiner_consumer_restarts_total") >= before + 1
    keys = Counter(m.key().decode() for m in labeled())
    assert max(keys.values()) == 1, "an example was emitted twice"
