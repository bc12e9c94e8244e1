"""int8 serving (spec.inference.quantization) from a real MLflow and real ONNX Runtime."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from driftline.api.artifacts import (
    ALIAS_CHAMPION,
    INPUT_NUMERIC,
    INT8_ARTIFACT,
    INT8_SIGNATURE_ARTIFACT,
    OUTPUT_PROBABILITIES,
    SIGNATURE_ARTIFACT,
    TAG_INT8_SHA256,
)
from driftline.api.routing import RoutingTable
from driftline.common.model_signature import sign_bytes
from driftline.common.redis_state import RoutingStore
from driftline.inference import metrics
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer
from driftline.trainer.export import quantize_int8, session
from driftline_testing.models import mlp_model, register_version
from driftline_testing.signing_keys import key_pair
from tests.integration.inference.harness import Running, wait_until

pytestmark = pytest.mark.integration

TOLERANCE = 0.02
"""Largest difference of a probability between the int8 and the fp32 graph."""


def precisions(server: Running) -> dict[str, str]:
    body = httpx.get(f"{server.url}/v2/models/{server.name}", timeout=5).json()
    return dict(body["parameters"]["precisions"])


def serving_precision(version: str, role: str) -> float | None:
    return metrics.model_serving.labels(version, role, "int8")._value.get()  # type: ignore[no-any-return]


def test_int8_serves_within_tolerance_and_a_candidate_without_one_serves_like_with_like(
    serve: Callable[..., Running],
    mlflow_server: MlflowServer,
    model_doc: dict[str, Any],
    contract: FeatureContract,
    redis_client: Any,
) -> None:
    doc = copy.deepcopy(model_doc)
    doc["spec"]["inference"]["quantization"] = {"mode": "int8", "maxAccuracyDrop": 0.01}
    registry = doc["spec"]["model"]["registry"]["name"]

    def publish(
        seed: int,
        int8: bytes | None = None,
        int8_sha256: str | None = None,
        aliases: tuple[str, ...] = (),
    ) -> str:
        graph = mlp_model(contract, hidden=(64, 64), seed=seed)
        files, tags = {}, {}
        if int8 is not None:
            files[INT8_ARTIFACT] = int8
            tags[TAG_INT8_SHA256] = int8_sha256 or hashlib.sha256(int8).hexdigest()
        return register_version(
            mlflow_server.tracking_uri, registry, graph, aliases=aliases, tags=tags, files=files
        )

    fp32_graph = mlp_model(contract, hidden=(64, 64), seed=1)
    int8_graph = quantize_int8(fp32_graph)
    stable = publish(1, int8_graph, aliases=(ALIAS_CHAMPION,))
    server = serve(doc)
    assert precisions(server) == {stable: "int8"}
    assert serving_precision(stable, "stable") == 1

    # The int8 graph answers within tolerance of the fp32 graph on the same rows.
    rng = np.random.default_rng(0)
    numeric = rng.normal(0, 2, (200, 3)).astype(np.float32)
    rows = [{"x1": float(a), "x2": float(b), "x3": float(c)} for a, b, c in numeric]
    answer = server.predict(rows).json()["predictions"]
    served = np.asarray([a["probabilities"] for a in answer], np.float32)
    assert {a["model_version"] for a in answer} == {stable}
    (fp32,) = session(fp32_graph).run([OUTPUT_PROBABILITIES], {INPUT_NUMERIC: numeric})
    (int8,) = session(int8_graph).run([OUTPUT_PROBABILITIES], {INPUT_NUMERIC: numeric})
    np.testing.assert_allclose(served, int8, atol=1e-6)  # it is the int8 graph that serves
    assert np.max(np.abs(served - fp32)) <= TOLERANCE
    assert np.mean(served.argmax(1) == fp32.argmax(1)) >= 0.97

    # A candidate without an int8 graph: stable and candidate both serve fp32.
    store = RoutingStore(server.service.namespace, server.service.name)
    candidate = publish(2)
    store.write(
        redis_client,
        RoutingTable(stable=stable, candidate=candidate, mode="canary", weight=50, revision=1),
    )
    wait_until(lambda: server.service.pool.state.table.candidate == candidate, 30, "the canary")  # type: ignore[union-attr]
    assert precisions(server) == {stable: "fp32", candidate: "fp32"}
    again = np.asarray(
        [a["probabilities"] for a in server.predict(rows, entity_id="any").json()["predictions"]]
    )
    assert again.shape == served.shape

    # A candidate with an int8 graph: both serve int8 again.
    paired = publish(3, quantize_int8(mlp_model(contract, hidden=(64, 64), seed=3)))
    store.write(
        redis_client,
        RoutingTable(stable=stable, candidate=paired, mode="canary", weight=50, revision=2),
    )
    wait_until(lambda: server.service.pool.state.table.candidate == paired, 30, "the int8 canary")  # type: ignore[union-attr]
    assert precisions(server) == {stable: "int8", paired: "int8"}

    # An int8 graph that does not match its sha256 tag is refused; the last good one serves.
    tampered = publish(4, int8_graph, int8_sha256="0" * 64)
    store.write(redis_client, RoutingTable(stable=tampered, revision=3))
    failures = server.service.pool.failures
    wait_until(lambda: f"{tampered}/int8" in failures, 30, "the tampered int8 graph to fail")
    assert "sha256" in failures[f"{tampered}/int8"].error
    assert server.predict(rows[0]).json()["model_version"] == stable


def test_a_signed_model_serves_int8_only_when_the_int8_graph_is_signed_too(
    serve: Callable[..., Running],
    mlflow_server: MlflowServer,
    model_doc: dict[str, Any],
    contract: FeatureContract,
    redis_client: Any,
    tmp_path: Path,
) -> None:
    keys = key_pair(tmp_path)
    doc = copy.deepcopy(model_doc)
    doc["spec"]["inference"]["quantization"] = {"mode": "int8"}
    doc["spec"]["model"]["signing"] = keys.signing_spec(required=True)
    registry = doc["spec"]["model"]["registry"]["name"]

    def publish(seed: int, sign_int8: bool, aliases: tuple[str, ...] = ()) -> str:
        graph = mlp_model(contract, hidden=(64, 64), seed=seed)
        int8 = quantize_int8(graph)
        files = {
            SIGNATURE_ARTIFACT: sign_bytes(graph, "model.onnx", keys.private_key),
            INT8_ARTIFACT: int8,
        }
        if sign_int8:
            files[INT8_SIGNATURE_ARTIFACT] = sign_bytes(int8, "model.int8.onnx", keys.private_key)
        return register_version(
            mlflow_server.tracking_uri,
            registry,
            graph,
            aliases=aliases,
            tags={TAG_INT8_SHA256: hashlib.sha256(int8).hexdigest()},
            files=files,
        )

    signed = publish(1, sign_int8=True, aliases=(ALIAS_CHAMPION,))
    server = serve(doc)
    assert precisions(server) == {signed: "int8"}

    half = publish(2, sign_int8=False)
    RoutingStore(server.service.namespace, server.service.name).write(
        redis_client, RoutingTable(stable=half, revision=1)
    )
    failures = server.service.pool.failures
    wait_until(lambda: f"{half}/int8" in failures, 30, "the unsigned int8 graph to be refused")
    assert "model.int8.onnx: no signature" in failures[f"{half}/int8"].error
    assert precisions(server) == {signed: "int8"}  # the last good version keeps serving
