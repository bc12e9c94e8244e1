"""The joiner adds joined labels to the per-entity outcome aggregates inference reads."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from driftline.api.spec import AggregateSource
from driftline.common.connections import KafkaConnection
from driftline.common.entity_aggregates import (
    EXCHANGE,
    Step,
    parse_reply,
    script_args,
    state_key,
)
from driftline.common.redis_state import model_prefix
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

NOW = 1_000_000.0
LABEL_RATE = AggregateSource(function="mean", of="outcome", window_seconds=3600)


def test_labels_are_added_once_per_request_to_their_entity(
    tmp_path: Path, unique: str, kafka: KafkaBroker, redis_server: RedisServer, redis_client: Any
) -> None:
    features = [
        {"name": "x1"},
        {"name": "x2"},
        {"name": "label_rate", "source": {"aggregate": LABEL_RATE.model_dump(by_alias=True)}},
    ]
    path = write_model(
        tmp_path / "model.yaml",
        unique,
        bootstrap_servers=kafka.bootstrap_servers,
        redis_url=redis_server.url,
        partitions=1,
        features=features,
    )
    settings = JoinerSettings(model_file=path, metrics_port=0, sweep_interval_seconds=0.2)
    worker = JoinerWorker(settings, clock=lambda: NOW)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.heartbeat.ready, 30, "the worker to be ready")
        conn = KafkaConnection(kafka.bootstrap_servers)
        records = Records(conn)
        labels = {"r1": 1.0, "r2": 0.0, "r3": 1.0, "r4": 1.0}
        for rid, label in labels.items():
            served = prediction(unique, rid)
            served = replace(served, entity_id=None if rid == "r4" else "card-1")
            records.send(worker.topics.predictions, served)
            records.send(worker.topics.outcomes, outcome(rid, label))
        records.send(worker.topics.outcomes, outcome("r1", 1.0))  # a duplicate outcome
        records.flush()
        wait_until(
            lambda: len(read_all(conn, worker.topics.labeled, settle=0.5)) == 4, 60, "4 examples"
        )
        key = state_key(model_prefix("test", unique), LABEL_RATE, "card-1")
        script = redis_client.register_script(EXCHANGE)

        def tally() -> Any:
            keys, args = script_args([Step(key, "read", LABEL_RATE.window_seconds)], NOW)
            return parse_reply(script(keys=keys, args=args))[0]

        wait_until(lambda: tally().count == 3, 30, "three labels of card-1")
        time.sleep(1.0)  # nothing more arrives: each label counted once
        assert (tally().count, tally().total) == (3, 2.0)
        assert redis_client.keys(f"{model_prefix('test', unique)}:agg:*") == [key.encode()]
    finally:
        stop.set()
        thread.join(30)
