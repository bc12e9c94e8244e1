"""The prediction log comes back after a broker outage that outlived its delivery timeout.

Messages that time out in flight make an idempotent producer bump its epoch; a
broker may answer that with PRODUCER_FENCED, after which that producer never
delivers again. The log must then replace its producer, not drop every later
prediction until the process restarts.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics
from driftline.inference.metrics import PRODUCER_RESTARTS_TOTAL
from driftline.inference.predlog import PredictionLog
from driftline.local.servers import TansuBroker
from tests.integration.joiner.streams import read_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _restarts() -> float:
    return REGISTRY.get_sample_value(PRODUCER_RESTARTS_TOTAL) or 0.0


@pytest.mark.timeout(120)
def test_the_log_resumes_after_an_outage_longer_than_its_delivery_timeout(
    tmp_path: Path, unique: str
) -> None:
    # A broker of its own: this test pauses it.
    broker = TansuBroker(log_path=tmp_path / "tansu.log").start()
    pid = broker.process.pid
    assert pid is not None
    try:
        conn = KafkaConnection(broker.bootstrap_servers)
        topic = f"{unique}.predictions"
        ensure_topics(conn, [topic], partitions=1)
        predictions = PredictionLog(
            conn, topic, unique, ["x1"], "classification",
            capacity=1000, flush_seconds=0.01,
            # The production timeouts (30 s) in miniature: requests in flight time out.
            producer_overrides={"request.timeout.ms": 1000, "message.timeout.ms": 2000},
        )  # fmt: skip

        def log(request_id: str) -> None:
            outputs = [np.array([1], np.int64), np.array([[0.2, 0.8]], np.float32)]
            predictions.add(
                ([request_id], [None], [(0.5,)], "1", "stable", outputs, time.time(), None)
            )
            predictions.drain()

        def logged() -> set[str]:
            return {m.key().decode() for m in read_to_end(conn, topic)}

        log("before")
        assert predictions.producer.flush(10) == 0
        restarts = _restarts()
        os.killpg(pid, signal.SIGSTOP)
        try:
            for i in range(30):  # in flight and queued when the timeouts strike
                log(f"during-{i}")
                time.sleep(0.15)
        finally:
            os.killpg(pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        sent: list[str] = []
        while time.monotonic() < deadline:
            sent.append(f"after-{len(sent)}")
            log(sent[-1])
            predictions.producer.poll(0.2)
            if any(key.startswith("after-") for key in logged()):
                break
        else:
            pytest.fail(
                f"nothing logged after the outage; producer replaced {_restarts() - restarts} times"
            )
        later = [f"later-{i}" for i in range(20)]
        for key in later:
            log(key)
        assert predictions.producer.flush(10) == 0
        assert set(later) <= logged(), "predictions lost after the log recovered"
        print(f"producer replaced {_restarts() - restarts} time(s); {len(sent)} sent until back")
    finally:
        os.killpg(pid, signal.SIGCONT)
        broker.stop()
