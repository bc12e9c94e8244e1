"""Overload: inference driven at ten times what it can serve sheds, fast, and stays whole.

One `python -m driftline.inference` process serves a model slow enough that the
model, not HTTP, bounds its throughput (batches of 2 rows, a queue of 16 rows,
one ONNX Runtime thread). The test measures that capacity with a closed loop,
then offers ten times as much with an open loop for a while, sampling the
process's memory, and checks what a client and an operator need:

- excess requests get 429 (or 503) with `Retry-After`, faster than admitted ones;
- admitted requests keep a bounded latency (the queue is bounded, so is the wait)
  and the service keeps serving about its capacity (no collapse);
- no 5xx besides 503, no refused or dropped connection;
- memory stays bounded; afterwards the service answers normally at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from driftline.api import parse_dynamic_model
from driftline.inference.contract import FeatureContract
from driftline.local.parts import INFERENCE
from driftline.local.runtime import Endpoints
from driftline.local.servers import KafkaBroker, MlflowServer, RedisServer, free_port
from driftline_testing.models import model_document, register_version, write_model_file
from tests.chaos.load import Client, percentile
from tests.chaos.support import (
    http_ok,
    record,
    rss_bytes,
    scaled,
    slow_model,
    start_part,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

OVERLOAD = 10
MAX_BATCH, MAX_QUEUE = 2, 16
BODY = b'{"entity_id": "e-1", "features": {"x1": 1.5, "x2": 7.25, "x3": 3.0}}'
MiB = 1024 * 1024


@pytest.mark.timeout(300)
def test_ten_times_capacity_is_shed_fast_with_retry_after(
    tmp_path: Path,
    unique: str,
    kafka: KafkaBroker,
    redis_server: RedisServer,
    mlflow_server: MlflowServer,
) -> None:
    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        inference={
            "batching": {"maxBatchSize": MAX_BATCH, "maxDelayMs": 0, "maxQueue": MAX_QUEUE},
            "baseline": False,
        },
    )
    model_file = write_model_file(tmp_path / "model.yaml", doc)
    contract = FeatureContract(parse_dynamic_model(doc).spec)
    register_version(
        mlflow_server.tracking_uri,
        unique,
        slow_model(contract.k, width=512, layers=1600),
        aliases=("champion",),
    )
    port = free_port()
    endpoints = Endpoints(kafka.bootstrap_servers, redis_server.url, mlflow_server.tracking_uri)
    server = start_part(
        INFERENCE, model_file, endpoints, tmp_path, metrics_port=free_port(), http_port=port,
        extra={"DRIFTLINE_INFERENCE_EXECUTION": "thread",
               "DRIFTLINE_INFERENCE_INTRA_OP_THREADS": "1"},
    )  # fmt: skip
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/v2/health/ready"), 120, "a model")
        pid = server.pid
        assert pid is not None
        client = Client("127.0.0.1", port, f"/v1/models/{unique}/predict", BODY)

        client.closed(connections=8, seconds=3)  # warm: sessions, allocator, connections
        measured = client.closed(connections=8, seconds=5)
        assert not [r for r in measured.replies if r.status != 200], "shed below capacity"
        capacity = measured.rate(200)
        capacity_p50 = percentile([r.latency for r in measured.replies], 0.5)

        rss_before = rss_bytes(pid)
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.25):
                samples.append(rss_bytes(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            run = client.open_loop(
                rate=OVERLOAD * capacity, connections=256, seconds=scaled(12, 40)
            )
        finally:
            done.set()
            sampler.join()
        after = client.closed(connections=4, seconds=2)
    finally:
        server.stop()

    admitted = run.with_status(200)
    shed = run.with_status(429, 503)
    failed = [r for r in run.replies if r.status == 0]
    server_errors = [r for r in run.replies if r.status >= 500 and r.status != 503]
    other = [r for r in run.replies if r.status not in (0, 200, 429, 503)]
    admitted_p99 = percentile([r.latency for r in admitted], 0.99)
    figures: dict[str, Any] = {
        "capacity_rps": round(capacity, 1),
        "offered_rps": round(run.offered_rate, 1),
        "offered_x_capacity": round(run.offered_rate / capacity, 1),
        "requests": len(run.replies),
        "admitted": len(admitted),
        "admitted_rps": round(run.rate(200), 1),
        "shed": len(shed),
        "shed_fraction": round(len(shed) / max(1, len(run.replies)), 3),
        "shed_p50_ms": round(1000 * percentile([r.latency for r in shed], 0.5), 1),
        "shed_p99_ms": round(1000 * percentile([r.latency for r in shed], 0.99), 1),
        "admitted_p50_ms": round(1000 * percentile([r.latency for r in admitted], 0.5), 1),
        "admitted_p99_ms": round(1000 * admitted_p99, 1),
        "capacity_p50_ms": round(1000 * capacity_p50, 1),
        "server_errors": len(server_errors),
        "connection_failures": len(failed),
        "rss_before_mib": round(rss_before / MiB, 1),
        "rss_max_mib": round(max(samples, default=rss_before) / MiB, 1),
    }
    record("overload", figures)

    assert not failed and not server_errors and not other, figures
    assert run.offered_rate >= 0.5 * OVERLOAD * capacity, f"the client fell short: {figures}"
    assert len(shed) >= 0.5 * len(run.replies), figures
    assert all(r.retry_after for r in shed), "a shed reply without Retry-After"
    # Shedding is fast: a refused request never waits for the model.
    assert percentile([r.latency for r in shed], 0.5) <= percentile(
        [r.latency for r in admitted], 0.5
    ), figures
    # The queue is bounded, so is an admitted request's wait (a few batch runs at
    # capacity vs. at most a full queue of them now), and the model keeps working.
    assert admitted_p99 <= 20 * capacity_p50, figures
    assert run.rate(200) >= 0.25 * capacity, figures  # goodput: no collapse
    assert max(samples, default=rss_before) <= rss_before + 64 * MiB, figures
    assert after.replies and all(r.status == 200 for r in after.replies), "no recovery"
