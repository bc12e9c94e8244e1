"""A real inference server in the test process: uvicorn (httptools, uvloop) on a
loopback port, in a background thread, as `python -m driftline.inference` runs it.

Tests talk HTTP to it exactly as clients do. The inference tests
(`tests/integration/inference`) and the hardening tests share it.
"""

from __future__ import annotations

import faulthandler
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from driftline.inference.server import DrainingServer, build_server
from driftline.inference.service import InferenceService
from driftline.inference.settings import InferenceSettings
from driftline.inference.workers import SharedReadiness
from driftline.local.servers import free_port
from driftline_testing.models import write_model_file
from tests import polling

# Short polls and grace periods: a test sees a new alias, route or drain in
# fractions of a second instead of the production defaults' seconds.
FAST = {
    "metrics_port": 0,
    "alias_poll_seconds": 0.3,
    "routing_poll_seconds": 0.2,
    "load_retry_seconds": 0.5,
    "unload_grace_seconds": 0.5,
    "stats_flush_seconds": 0.2,
    "drain_timeout_seconds": 5,
}


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    # On a timeout every thread's stack is dumped: where the server was stuck, for the record.
    return polling.wait_until(
        condition,
        timeout,
        what,
        interval=0.05,
        on_timeout=partial(faulthandler.dump_traceback, all_threads=True),
    )


@dataclass
class Running:
    url: str
    server: DrainingServer
    thread: threading.Thread

    @property
    def service(self) -> InferenceService:
        return self.server.service

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def grpc_address(self) -> str:
        """host:port of the gRPC service (started with `grpc_port=0`)."""
        port = self.server.config.app.grpc_port
        assert port, "this server has no gRPC service: start it with grpc_port=0"
        return f"127.0.0.1:{port}"

    def predict(self, features: Any, entity_id: Any = None, **extra: Any) -> httpx.Response:
        body = {"features": features, **({"entity_id": entity_id} if entity_id else {}), **extra}
        return httpx.post(f"{self.url}/v1/models/{self.name}/predict", json=body, timeout=10)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"


@contextmanager
def servers(folder: Path) -> Iterator[Callable[..., Running]]:
    """start(doc, wait_ready=True, siblings=None, **settings) -> a running server;
    every one started is stopped when the block ends."""
    running: list[Running] = []

    def start(
        doc: dict[str, Any],
        wait_ready: bool = True,
        siblings: SharedReadiness | None = None,
        **settings: Any,
    ) -> Running:
        path = write_model_file(folder / f"model-{len(running)}.yaml", doc)
        options = {**FAST, "model_dir": str(folder / "models"), **settings}
        port = free_port()
        server = build_server(
            InferenceSettings(model_file=path, host="127.0.0.1", port=port, **options), siblings
        )
        thread = threading.Thread(target=server.run, name="inference-server", daemon=True)
        thread.start()
        instance = Running(f"http://127.0.0.1:{port}", server, thread)
        running.append(instance)
        wait_until(lambda: server.started or not thread.is_alive(), 60, "the server to start")
        if wait_ready:
            wait_until(instance.ready, 60, "a model to be loaded")
        return instance

    try:
        yield start
    finally:
        for instance in running:
            instance.stop()
