"""Serving from MLflow over real HTTP: both APIs, tritonclient, validation, readiness, stats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.routing import RoutingTable
from driftline.common.redis_state import RoutingStore, ServingStore
from driftline.inference.contract import FeatureContract
from driftline.inference.onnx_session import CPU, OnnxModel
from driftline.inference.workers import SharedReadiness
from driftline_testing.models import mlp_model
from tests.integration.inference.harness import Running, wait_until

from .conftest import SAYS_1

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

ROW = {"x1": 0.5, "x2": -1.25, "x3": 3.0}


def test_serves_the_champion_with_request_ids_on_both_routes(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    contract: FeatureContract,
    tmp_path: Any,
) -> None:
    version = publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    server = serve()
    name = server.service.name

    one = server.predict(ROW, entity_id="u-1")
    assert one.status_code == 200, one.text
    answer = one.json()
    assert answer["model_version"] == version and answer["variant"] == "stable"
    assert answer["request_id"]

    # The same numbers as ONNX Runtime gives for the same graph.
    path = tmp_path / "reference.onnx"
    path.write_bytes(mlp_model(contract, output_bias=(0.0, 0.0)))
    reference = OnnxModel(path, contract, [CPU], threads=1)
    label, probabilities = reference.run(np.array([[0.5, -1.25, 3.0]], np.float32), None)
    assert answer["label"] == int(label[0])
    assert np.allclose(answer["probabilities"], probabilities[0], atol=1e-6)

    many = server.predict([ROW, {**ROW, "x1": 9}], entity_id=["a", "b"]).json()
    ids = [p["request_id"] for p in many["predictions"]]
    assert len({*ids, answer["request_id"]}) == 3

    v2 = httpx.post(
        f"{server.url}/v2/models/{name}/infer",
        json={
            "id": "client-id",
            "inputs": [
                {"name": n, "shape": [1], "datatype": "FP32", "data": [v]} for n, v in ROW.items()
            ],
        },
    ).json()
    assert v2["id"] == "client-id" and v2["model_version"] == version
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["label"]["data"] == [answer["label"]]
    assert outputs["request_id"]["data"] == v2["parameters"]["request_ids"]

    pinned = httpx.post(
        f"{server.url}/v2/models/{name}/versions/{version}/infer",
        json={
            "inputs": [{"name": "numeric", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
        },
    )
    assert pinned.status_code == 200
    absent = httpx.post(
        f"{server.url}/v2/models/{name}/versions/999/infer",
        json={
            "inputs": [{"name": "numeric", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
        },
    )
    assert absent.status_code == 404 and absent.json()["field"] == "version"

    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'driftline_inference_request_seconds_count{{model="{name}"' in metrics
    assert "driftline_inference_batch_rows_bucket" in metrics


def test_tritonclient_works_unchanged(
    serve: Callable[..., Running], publish: Callable[..., str]
) -> None:
    import tritonclient.http as triton

    version = publish(aliases=[ALIAS_CHAMPION])
    server = serve()
    name = server.service.name
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    assert [i["name"] for i in metadata["inputs"]] == ["x1", "x2", "x3"]
    assert metadata["versions"] == [version]

    inputs = []
    for feature in ("x1", "x2", "x3"):
        tensor = triton.InferInput(feature, [4], "FP32")
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32))  # binary, the default
        inputs.append(tensor)
    result = client.infer(name, inputs, parameters={"entity_id": "e-7"})
    assert result.as_numpy("label").tolist() == [0, 0, 0, 0]
    assert result.as_numpy("probabilities").shape == (4, 2)
    ids = [i.decode() for i in result.as_numpy("request_id")]
    assert ids == result.get_response()["parameters"]["request_ids"]

    json_out = client.infer(name, inputs, outputs=[triton.InferRequestedOutput("label", False)])
    assert json_out.as_numpy("label").tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"features": {**ROW, "x2": "high"}}, 422, "features.x2"),
        ({"features": {"x1": 1, "x2": 2}}, 422, "features.x3"),
        ({"features": [ROW, {**ROW, "x3": float("nan")}]}, 422, "features[1].x3"),
        ({"features": {**ROW, "x1": 1e40}}, 422, "features.x1"),
        ({"features": {**ROW, "x1": [1, 2]}}, 422, "features.x1"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    publish(aliases=[ALIAS_CHAMPION])
    server = serve()
    import json

    response = httpx.post(
        f"{server.url}/v1/models/{server.service.name}/predict",
        content=json.dumps(body),  # json.dumps writes NaN, as careless clients do
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert response.json()["field"] == field


def test_oversized_bodies_and_unknown_models(
    serve: Callable[..., Running], publish: Callable[..., str]
) -> None:
    publish(aliases=[ALIAS_CHAMPION])
    server = serve(max_body_bytes=2048)
    name = server.service.name
    big = {"features": [ROW] * 200}
    too_large = httpx.post(f"{server.url}/v1/models/{name}/predict", json=big)
    assert too_large.status_code == 413 and too_large.json()["field"] == "body"

    def chunks() -> Any:  # no Content-Length: the limit holds while reading
        yield b'{"features": ['
        for _ in range(200):
            yield b'{"x1": 1, "x2": 2, "x3": 3},'
        yield b"{}]}"

    streamed = httpx.post(f"{server.url}/v1/models/{name}/predict", content=chunks())
    assert streamed.status_code == 413
    assert (
        httpx.post(f"{server.url}/v1/models/nope/predict", json={"features": ROW}).status_code
        == 404
    )
    assert httpx.post(f"{server.url}/v1/models/{name}/predict", content=b"{").status_code == 400
    assert server.predict(ROW).status_code == 200


def test_not_ready_until_a_version_loads_and_a_bad_artifact_never_serves(
    serve: Callable[..., Running], publish: Callable[..., str], redis_client: Any
) -> None:
    server = serve(wait_ready=False)
    assert not server.ready()
    refused = server.predict(ROW)
    assert refused.status_code == 503 and "retry-after" in refused.headers

    good = publish(aliases=[ALIAS_CHAMPION])
    wait_until(server.ready, 30, "the champion to load")

    # A version whose bytes do not match its registered sha256 is refused; v1 stays.
    tampered = publish(bias=SAYS_1, sha256="0" * 64)
    store = RoutingStore(server.service.namespace, server.service.name)
    store.write(redis_client, RoutingTable(stable=tampered, revision=1))
    wait_until(lambda: tampered in server.service.pool.failures, 20, "the load to fail")
    assert "sha256" in server.service.pool.failures[tampered].error
    assert server.predict(ROW).json()["model_version"] == good
    assert server.ready()


def test_a_worker_is_ready_only_when_every_sibling_is(
    serve: Callable[..., Running], publish: Callable[..., str]
) -> None:
    # One of two workers: its sibling's flag is set and cleared here, by hand.
    flags = SharedReadiness.allocate(2)
    sibling = SharedReadiness(flags, 1)
    publish(aliases=[ALIAS_CHAMPION])
    server = serve(wait_ready=False, siblings=SharedReadiness(flags, 0))
    wait_until(lambda: server.service.serving, 30, "the champion to load")
    wait_until(lambda: flags[0] == 1, 5, "the worker to publish its own readiness")
    refused = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
    assert refused.status_code == 503 and "worker 1" in refused.text, refused.text
    assert server.predict(ROW).status_code == 200  # it serves what reaches it

    sibling.publish(True)
    assert server.ready()
    sibling.publish(False)
    assert not server.ready()
    sibling.publish(True)
    server.service.draining = True  # its own drain clears its flag for the sibling
    wait_until(lambda: flags[0] == 0, 5, "the draining worker's flag to clear")
    assert not server.ready()


def test_serving_stats_reach_redis_for_the_rollout(
    serve: Callable[..., Running], publish: Callable[..., str], redis_client: Any
) -> None:
    version = publish(aliases=[ALIAS_CHAMPION])
    server = serve()
    for _ in range(25):
        assert server.predict(ROW).status_code == 200
    store = ServingStore(server.service.namespace, server.service.name)
    stats = wait_until(
        lambda: (s := store.read(redis_client, version, "stable", 60)).requests >= 25 and s,
        10,
        "serving stats in Redis",
    )
    assert stats.requests == 25 and stats.errors == 0
    assert sum(stats.latency_counts) == 25
    assert stats.quantile_ms(0.99) is not None


def _get_on(sock: Any, host: str) -> bytes:
    sock.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return bytes(sock.recv(4096))


def test_an_idle_connection_outlives_what_sits_in_front(
    serve: Callable[..., Running], publish: Callable[..., str]
) -> None:
    """Load balancers keep idle connections 60 s: a server that closes first races the
    next request sent on that connection, and its client sees a reset. The default keeps
    one open past the 5 s that was uvicorn's (and httpx's) default; the setting holds."""
    import socket
    import time
    from urllib.parse import urlparse

    publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    for keep_alive, idle, still_open in ((None, 6.0, True), (1, 2.0, False)):
        server = serve(**({} if keep_alive is None else {"keep_alive_seconds": keep_alive}))
        url = urlparse(server.url)
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            assert _get_on(sock, url.netloc).startswith(b"HTTP/1.1 200")
            time.sleep(idle)
            try:
                again = _get_on(sock, url.netloc)
            except ConnectionError:
                again = b""
        assert again.startswith(b"HTTP/1.1 200") is still_open, (keep_alive, again[:80])
        server.stop()
