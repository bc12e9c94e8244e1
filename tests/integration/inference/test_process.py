"""`python -m driftline.inference` as Kubernetes runs it: ready, then a clean SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import Prediction, decode
from driftline.local.servers import free_port
from driftline.local.servers.kafka import KafkaBroker
from driftline_testing.models import write_model_file
from tests.integration.inference.harness import wait_until

from .conftest import read_predictions

pytestmark = pytest.mark.integration

ROW = {"x1": 1.0, "x2": 2.0, "x3": 3.0}


def ready(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_sigterm_drains_in_flight_requests_and_exits_0(
    tmp_path: Path,
    model_doc: dict[str, Any],
    publish: Callable[..., str],
    kafka: KafkaBroker,
) -> None:
    publish(aliases=[ALIAS_CHAMPION])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = model_doc["metadata"]["name"]
    env = {
        **os.environ,
        "DRIFTLINE_INFERENCE_MODEL_FILE": str(write_model_file(tmp_path / "m.yaml", model_doc)),
        "DRIFTLINE_INFERENCE_HOST": "127.0.0.1",
        "DRIFTLINE_INFERENCE_PORT": str(port),
        "DRIFTLINE_INFERENCE_METRICS_PORT": "0",
        "DRIFTLINE_INFERENCE_SHUTDOWN_DELAY_SECONDS": "1.5",
        "DRIFTLINE_INFERENCE_DRAIN_TIMEOUT_SECONDS": "20",
        "DRIFTLINE_INFERENCE_MODEL_DIR": str(tmp_path / "models"),
    }
    log = (tmp_path / "inference.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline.inference"], env=env, stdout=log, stderr=log
    )
    try:
        wait_until(lambda: ready(url) == 200 or process.poll() is not None, 90, "readiness")
        assert process.poll() is None, (tmp_path / "inference.log").read_text()

        answered = [
            httpx.post(f"{url}/v1/models/{name}/predict", json={"features": ROW}).json()
            for _ in range(5)
        ]
        # A request in flight: headers and half of the body sent before the signal.
        body = json.dumps({"entity_id": "late", "features": ROW}).encode()
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(
            f"POST /v1/models/{name}/predict HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )

        process.send_signal(signal.SIGTERM)
        wait_until(lambda: ready(url) == 503, 5, "readiness to turn 503")
        during = httpx.post(f"{url}/v1/models/{name}/predict", json={"features": ROW})
        assert during.status_code == 200  # still served while load balancers catch up
        answered.append(during.json())

        wait_until(lambda: ready(url) is None, 10, "the listener to close")
        slow.sendall(body[10:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            response += chunk
        slow.close()
        assert response.startswith(b"HTTP/1.1 200"), response
        late = json.loads(response.split(b"\r\n\r\n", 1)[1])
        answered.append(late)

        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()

    # What was answered before and during the drain reached the log before the exit.
    ids = {a["request_id"] for a in answered}
    records = read_predictions(kafka, f"{name}.predictions", len(ids))
    assert {decode(r.value(), Prediction).request_id for r in records} == ids


@pytest.mark.slow
def test_workers_share_the_port_and_stop_together(
    tmp_path: Path, model_doc: dict[str, Any], publish: Callable[..., str]
) -> None:
    publish(aliases=[ALIAS_CHAMPION])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DRIFTLINE_INFERENCE_MODEL_FILE": str(write_model_file(tmp_path / "m.yaml", model_doc)),
        "DRIFTLINE_INFERENCE_HOST": "127.0.0.1",
        "DRIFTLINE_INFERENCE_PORT": str(port),
        "DRIFTLINE_INFERENCE_WORKERS": "2",
        "DRIFTLINE_INFERENCE_PREDICTION_LOG": "false",
        "DRIFTLINE_INFERENCE_MODEL_DIR": str(tmp_path / "models"),
    }
    log = (tmp_path / "inference.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline.inference"], env=env, stdout=log, stderr=log
    )
    try:
        wait_until(lambda: ready(url) == 200 or process.poll() is not None, 120, "readiness")
        assert process.poll() is None, (tmp_path / "inference.log").read_text()
        name = model_doc["metadata"]["name"]
        prefixes = set()
        for _ in range(40):  # new connections land on either worker
            with httpx.Client() as client:
                answer = client.post(f"{url}/v1/models/{name}/predict", json={"features": ROW})
            # Ready means every worker is: whichever one a connection reaches answers.
            assert answer.status_code == 200, answer.text
            prefixes.add(answer.json()["request_id"].split("-")[0])
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert 1 <= len(prefixes) <= 2  # one id prefix per worker process
