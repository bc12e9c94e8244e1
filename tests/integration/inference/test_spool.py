"""Nothing lost while the broker is away: the prediction log spools to disk and replays.

A broker of each test's own is paused (SIGSTOP: its connections hang, as in a
partition) while predictions are served; the inference process is killed with -9
and started again in the middle of the outage. Once the broker is back, every
prediction is in the topic, in the order it was served, and the counters add up.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics
from driftline.inference.metrics import (
    PREDICTIONS_DROPPED_TOTAL,
    PREDICTIONS_REPLAYED_TOTAL,
    PREDICTIONS_SPOOLED_TOTAL,
)
from driftline.inference.predlog import PredictionLog
from driftline.inference.spool import Spool
from driftline.local.servers import TansuBroker, free_port
from driftline_testing.models import write_model_file
from tests.chaos.support import metric
from tests.integration.inference.harness import wait_until
from tests.integration.joiner.streams import read_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW = {"x1": 1.0, "x2": 2.0, "x3": 3.0}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker of the test's own (the tests pause it)."""
    server = TansuBroker(log_path=tmp_path / "tansu.log").start()
    try:
        yield server
    finally:
        pid = server.process.pid
        if pid is not None:
            os.killpg(pid, signal.SIGCONT)
        server.stop()


def pause(server: TansuBroker) -> None:
    assert server.process.pid is not None
    os.killpg(server.process.pid, signal.SIGSTOP)


def resume(server: TansuBroker) -> None:
    assert server.process.pid is not None
    os.killpg(server.process.pid, signal.SIGCONT)


def in_topic(conn: KafkaConnection, topic: str) -> list[str]:
    return [m.key().decode() for m in read_to_end(conn, topic)]


def first_copies(keys: list[str]) -> list[str]:
    """The topic without the second copies a stalled broker may hold (at least once)."""
    return list(dict.fromkeys(keys))


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


@pytest.mark.timeout(120)
def test_the_log_spools_while_the_broker_is_away_and_replays_in_order(
    tmp_path: Path, unique: str, broker: TansuBroker
) -> None:
    conn = KafkaConnection(broker.bootstrap_servers)
    topic = f"{unique}.predictions"
    ensure_topics(conn, [topic], partitions=1)
    spool = Spool(tmp_path / "spool", max_bytes=8 * 1024 * 1024, fsync="interval")
    before = {
        "spooled": _sample(PREDICTIONS_SPOOLED_TOTAL),
        "replayed": _sample(PREDICTIONS_REPLAYED_TOTAL),
        "expired": _sample(PREDICTIONS_DROPPED_TOTAL, reason="expired"),
    }
    predictions = PredictionLog(
        conn, topic, unique, ["x1"], "classification",
        capacity=1000, flush_seconds=0.01, spool=spool, max_age_seconds=60,
        stall_seconds=0.5,
    )  # fmt: skip
    served: list[str] = []

    def log(request_id: str, ts: float | None = None) -> None:
        outputs = [np.array([1], np.int64), np.array([[0.2, 0.8]], np.float32)]
        record = ([request_id], [None], [(0.5,)], "1", "stable", outputs, ts or time.time(), None)
        predictions.add(record)  # type: ignore[arg-type]
        predictions.drain()
        served.append(request_id)

    for i in range(5):
        log(f"before-{i}")
    wait_until(lambda: len(in_topic(conn, topic)) == 5, 30, "the first predictions")
    pause(broker)
    try:
        for i in range(200):
            log(f"during-{i}")
            time.sleep(0.01)
        wait_until(lambda: predictions.drain() == 0 and predictions.spooling, 10, "spooling")
        assert spool.pending > 150
        # One answered long ago (a restart after a long outage): older than the window.
        predictions.add((["stale"], [None], [(0.5,)], "1", "stable",
                         [np.array([1], np.int64), np.array([[0.2, 0.8]], np.float32)],
                         time.time() - 3600, None))  # fmt: skip
        for i in range(5):
            log(f"late-{i}")
    finally:
        resume(broker)

    def replayed() -> bool:
        predictions.drain()
        return not predictions.spooling

    wait_until(replayed, 60, "the spool to be replayed")
    for i in range(5):
        log(f"after-{i}")
    assert predictions.producer.flush(10) == 0
    keys = in_topic(conn, topic)
    assert first_copies(keys) == served, "the topic differs from what was served, in order"
    # Only records in flight when the broker stalled may be there twice.
    assert len(keys) - len(served) <= 60
    stats = predictions.stats()
    assert stats["expired"] == 1 and stats["shed"] == 0 and stats["spool_pending"] == 0
    assert _sample(PREDICTIONS_DROPPED_TOTAL, reason="expired") - before["expired"] == 1
    spooled = _sample(PREDICTIONS_SPOOLED_TOTAL) - before["spooled"]
    replayed_n = _sample(PREDICTIONS_REPLAYED_TOTAL) - before["replayed"]
    assert spooled == replayed_n + 1 == stats["spooled"]  # every spooled one replayed, or expired
    assert not list((tmp_path / "spool").glob("*.seg")), "a replayed spool leaves no segment"


def _start(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "driftline.inference"], env=env, stdout=log, stderr=log
        )


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(300)
def test_kill_9_during_an_outage_loses_no_prediction_and_keeps_their_order(
    tmp_path: Path,
    model_doc: dict[str, Any],
    publish: Callable[..., str],
    broker: TansuBroker,
) -> None:
    publish(aliases=[ALIAS_CHAMPION])
    doc = copy.deepcopy(model_doc)
    doc["spec"]["kafka"]["bootstrapServers"] = broker.bootstrap_servers
    name = doc["metadata"]["name"]
    topic = f"{name}.predictions"
    conn = KafkaConnection(broker.bootstrap_servers)
    ensure_topics(conn, [topic, f"{name}.outcomes"], partitions=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DRIFTLINE_INFERENCE_MODEL_FILE": str(write_model_file(tmp_path / "m.yaml", doc)),
        "DRIFTLINE_INFERENCE_HOST": "127.0.0.1",
        "DRIFTLINE_INFERENCE_PORT": str(port),
        "DRIFTLINE_INFERENCE_METRICS_PORT": "0",
        "DRIFTLINE_INFERENCE_MODEL_DIR": str(tmp_path / "models"),
        "DRIFTLINE_INFERENCE_SPOOL_DIR": str(tmp_path / "spool"),
        "DRIFTLINE_INFERENCE_LOG_STALL_MS": "500",
    }
    log_path = tmp_path / "inference.log"
    served: list[str] = []

    def serve(n: int, tag: str) -> None:
        for i in range(n):
            answer = httpx.post(
                f"{url}/v1/models/{name}/predict",
                json={"entity_id": f"{tag}-{i}", "features": ROW},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            served.append(answer.json()["request_id"])

    def counter(name: str, **labels: str) -> float:
        return metric(f"{url}/metrics", name, labels or None)

    process = _start(env, log_path)
    try:
        wait_until(lambda: _ready(url) or process.poll() is not None, 120, "readiness")
        assert process.poll() is None, log_path.read_text()
        serve(5, "before")
        wait_until(lambda: len(in_topic(conn, topic)) == 5, 30, "the first predictions")

        pause(broker)
        try:
            serve(40, "outage")
            # The log notices the broker is away and spools what it holds.
            wait_until(lambda: counter(PREDICTIONS_SPOOLED_TOTAL) >= 40, 20, "spooling")
            time.sleep(0.5)
            process.kill()  # kill -9 in the middle of the outage
            process.wait()
            process = _start(env, log_path)
            wait_until(lambda: _ready(url) or process.poll() is not None, 120, "readiness again")
            assert process.poll() is None, log_path.read_text()
            serve(20, "restarted")
            wait_until(lambda: counter(PREDICTIONS_SPOOLED_TOTAL) >= 20, 20, "spooling again")
        finally:
            resume(broker)

        wait_until(lambda: len(set(in_topic(conn, topic))) >= len(served), 90, "every prediction")
        serve(5, "after")
        wait_until(lambda: len(set(in_topic(conn, topic))) >= len(served), 30, "the last ones")
        keys = in_topic(conn, topic)
        assert first_copies(keys) == served, (
            f"{len(keys)} records for {len(served)} served; "
            f"missing {sorted(set(served) - set(keys))[:5]}, "
            f"duplicated {len(keys) - len(set(keys))}"
        )
        # The second process's own counts: what it took over from the spool and what it
        # spooled itself all went out; nothing was shed, torn or dropped.
        assert counter(PREDICTIONS_REPLAYED_TOTAL) >= 20
        for reason in ("spool_shed", "spool_torn", "expired", "spool_error", "buffer_full"):
            assert counter(PREDICTIONS_DROPPED_TOTAL, reason=reason) == 0, reason
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
