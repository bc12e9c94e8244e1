"""Fixtures for the inference service against real MLflow, Redis and a Kafka broker.

`serve(...)` runs the real app under uvicorn (httptools, uvloop) on a loopback port
in a background thread, so tests talk HTTP to it exactly as clients do; `publish`
registers model versions in MLflow the way the trainer does.
"""

from __future__ import annotations

import faulthandler
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftline.api import parse_dynamic_model
from driftline.common.connections import KafkaConnection
from driftline.common.infra import MlflowServer, RedisServer, free_port
from driftline.common.infra.kafka import KafkaBroker
from driftline.common.kafka import make_consumer
from driftline.inference.contract import FeatureContract
from driftline.inference.server import DrainingServer, build_server
from driftline.inference.service import InferenceService
from driftline.inference.settings import InferenceSettings
from driftline.inference.testing import (
    mlp_model,
    model_document,
    register_version,
    write_model_file,
)

# Versions that always answer class 0 or class 1: which model answered shows in the output.
SAYS_0 = (8.0, -8.0)
SAYS_1 = (-8.0, 8.0)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    faulthandler.dump_traceback(all_threads=True)  # where the server was stuck, for the record
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}")


@dataclass
class Running:
    url: str
    server: DrainingServer
    thread: threading.Thread

    @property
    def service(self) -> InferenceService:
        return self.server.service

    def predict(self, features: Any, entity_id: Any = None, **extra: Any) -> httpx.Response:
        name = self.service.name
        body = {"features": features, **({"entity_id": entity_id} if entity_id else {}), **extra}
        return httpx.post(f"{self.url}/v1/models/{name}/predict", json=body, timeout=10)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"


@pytest.fixture
def model_doc(
    unique: str, mlflow_server: MlflowServer, redis_server: RedisServer, kafka: KafkaBroker
) -> dict[str, Any]:
    return model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        inference={"batching": {"maxBatchSize": 32, "maxDelayMs": 1}, "baseline": False},
    )


@pytest.fixture
def contract(model_doc: dict[str, Any]) -> FeatureContract:
    return FeatureContract(parse_dynamic_model(model_doc).spec)


@pytest.fixture
def publish(
    mlflow_server: MlflowServer, model_doc: dict[str, Any], contract: FeatureContract
) -> Callable[..., str]:
    """publish(bias, aliases=(), sha256=None) -> the new version number."""

    def register(
        bias: Sequence[float] = SAYS_0, aliases: Sequence[str] = (), sha256: str | None = None
    ) -> str:
        return register_version(
            mlflow_server.tracking_uri,
            model_doc["spec"]["model"]["registry"]["name"],
            mlp_model(contract, output_bias=bias),
            aliases=aliases,
            sha256=sha256,
        )

    return register


FAST = {
    "metrics_port": 0,
    "alias_poll_seconds": 0.3,
    "routing_poll_seconds": 0.2,
    "load_retry_seconds": 0.5,
    "unload_grace_seconds": 0.5,
    "stats_flush_seconds": 0.2,
    "drain_timeout_seconds": 5,
}


@pytest.fixture
def serve(tmp_path: Path, model_doc: dict[str, Any]) -> Iterator[Callable[..., Running]]:
    """serve(doc=None, wait_ready=True, **settings) -> a running server (stopped afterwards)."""
    running: list[Running] = []

    def start(
        doc: dict[str, Any] | None = None, wait_ready: bool = True, **settings: Any
    ) -> Running:
        path = write_model_file(tmp_path / f"model-{len(running)}.yaml", doc or model_doc)
        options = {**FAST, "model_dir": str(tmp_path / "models"), **settings}
        port = free_port()
        server = build_server(
            InferenceSettings(model_file=path, host="127.0.0.1", port=port, **options)
        )
        thread = threading.Thread(target=server.run, name="inference-server", daemon=True)
        thread.start()
        instance = Running(f"http://127.0.0.1:{port}", server, thread)
        running.append(instance)
        wait_until(lambda: server.started or not thread.is_alive(), 60, "the server to start")
        if wait_ready:
            wait_until(instance.ready, 60, "a model to be loaded")
        return instance

    yield start
    for instance in running:
        instance.stop()


def read_predictions(
    kafka: KafkaBroker, topic: str, count: int, timeout: float = 30.0
) -> list[Any]:
    """Read `count` records of `topic` from its start (fewer when the time runs out)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = make_consumer(
        KafkaConnection(kafka.bootstrap_servers), f"reader-{topic}-{time.monotonic_ns()}"
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            records += [m for m in consumer.consume(500, 0.5) if m.error() is None]
        return records
    finally:
        consumer.close()
