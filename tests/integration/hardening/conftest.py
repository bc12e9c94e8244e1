"""Fixtures of the hardening tests: a real inference server on loopback.

`serving(doc)` runs the inference app under uvicorn (httptools, uvloop) in a thread,
as `python -m driftline.inference` does, against the session's real Kafka, Redis and
MLflow; `champion` registers a model version the way the trainer does. The same
harness is used by the inference part's own tests (`tests/integration/inference`);
here it stays small on purpose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftline.api import parse_dynamic_model
from driftline.common.infra import MlflowServer, RedisServer, free_port
from driftline.common.infra.kafka import KafkaBroker
from driftline.inference.contract import FeatureContract
from driftline.inference.server import DrainingServer, build_server
from driftline.inference.settings import InferenceSettings
from driftline.inference.testing import model_document, write_model_file

FAST = {
    "metrics_port": 0,
    "alias_poll_seconds": 0.3,
    "routing_poll_seconds": 0.2,
    "load_retry_seconds": 0.5,
    "unload_grace_seconds": 0.5,
    "stats_flush_seconds": 0.2,
    "drain_timeout_seconds": 5,
}


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Served:
    url: str
    server: DrainingServer
    thread: threading.Thread

    @property
    def name(self) -> str:
        return self.server.service.name

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
    """A model with numeric and categorical features, served from the test servers."""
    return model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        categorical=("channel",),
        inference={"batching": {"maxBatchSize": 32, "maxDelayMs": 1}, "baseline": False},
    )


@pytest.fixture
def contract(model_doc: dict[str, Any]) -> FeatureContract:
    return FeatureContract(parse_dynamic_model(model_doc).spec)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """serving(doc, **settings) -> a server with a loaded model (stopped afterwards)."""
    started: list[Served] = []

    def start(doc: dict[str, Any], **settings: Any) -> Served:
        path = write_model_file(tmp_path / f"model-{len(started)}.yaml", doc)
        port = free_port()
        options = {**FAST, "model_dir": str(tmp_path / "models"), **settings}
        server = build_server(
            InferenceSettings(model_file=path, host="127.0.0.1", port=port, **options)
        )
        thread = threading.Thread(target=server.run, name="inference-server", daemon=True)
        thread.start()
        served = Served(f"http://127.0.0.1:{port}", server, thread)
        started.append(served)
        wait_until(served.ready, 60, "a model to be loaded")
        return served

    yield start
    for served in started:
        served.stop()
