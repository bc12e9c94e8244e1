"""The Open Inference Protocol over gRPC, driven by tritonclient's gRPC client unchanged
(from its own venv, tests/rig/tritonclient), beside REST on the same server: the same
answers, the same prediction log, the errors' gRPC status codes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import Prediction, decode
from driftline.inference.oip_grpc import inference_pb2
from driftline.local.servers.kafka import KafkaBroker
from driftline_testing.tritonclient import TritonGrpcClient, tritonclient_built, tritonclient_fields
from tests.integration.inference.harness import Running

from .conftest import read_predictions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

ROWS = {"x1": [0.5, 1.0, -2.0, 4.0], "x2": [-1.25, 0.0, 3.5, 1.0], "x3": [3.0, 0.25, 0.0, -1.0]}


@pytest.fixture(autouse=True)
def _client_built() -> None:
    if not tritonclient_built():
        if os.environ.get("DRIFTLINE_RIG", "").lower() == "off":
            pytest.skip("DRIFTLINE_RIG=off and tritonclient's venv is not built (make rig)")
        pytest.fail("tritonclient's venv is not built: run `make rig`")


def grpc_inputs(rows: dict[str, list[Any]], datatype: str = "FP32") -> list[dict[str, Any]]:
    return [
        {"name": n, "shape": [len(v)], "datatype": datatype, "data": v} for n, v in rows.items()
    ]


def test_tritonclient_grpc_is_served_like_rest(
    serve: Callable[..., Running], publish: Callable[..., str], kafka: KafkaBroker
) -> None:
    version = publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    server = serve(grpc_port=0)
    name = server.name
    client = TritonGrpcClient(server.grpc_address)
    infer = {"call": "infer", "model": name, "inputs": grpc_inputs(ROWS)}
    (
        live,
        ready,
        model_ready,
        metadata,
        served,
        unknown_model,
        unknown_version,
        not_a_number,
        missing,
        absent_version,
    ) = client.calls(
        [
            {"call": "live"},
            {"call": "ready"},
            {"call": "model_ready", "model": name},
            {"call": "metadata", "model": name},
            {**infer, "parameters": {"entity_id": "g-1"}, "id": "grpc-id"},
            {"call": "model_ready", "model": "nope"},
            {"call": "metadata", "model": name, "version": "999"},
            {
                **infer,
                "inputs": [
                    *grpc_inputs({"x1": [1.0], "x3": [2.0]}),
                    {"name": "x2", "shape": [1], "datatype": "BYTES", "data": ["high"]},
                ],
            },
            {**infer, "inputs": grpc_inputs({"x1": [1.0], "x2": [2.0]})},
            {**infer, "version": "999"},
        ]
    )
    assert live == ready == model_ready == {"ok": True}
    meta = metadata["ok"]
    rest_meta = httpx.get(f"{server.url}/v2/models/{name}").json()
    assert meta["versions"] == rest_meta["versions"] == [version]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        (i["name"], i["datatype"]) for i in rest_meta["inputs"]
    ]
    assert [o["name"] for o in meta["outputs"]] == [o["name"] for o in rest_meta["outputs"]]

    # The same numbers as REST for the same rows.
    answer = served["ok"]
    rest = httpx.post(
        f"{server.url}/v2/models/{name}/infer",
        json={"inputs": [{**t, "shape": t["shape"]} for t in grpc_inputs(ROWS)]},
    ).json()
    outputs = {o["name"]: o for o in rest["outputs"]}
    assert answer["model_name"] == name and answer["model_version"] == version
    assert answer["id"] == "grpc-id"
    assert answer["outputs"]["label"]["data"] == outputs["label"]["data"]
    assert answer["outputs"]["label"]["datatype"] == outputs["label"]["datatype"] == "INT64"
    assert answer["outputs"]["probabilities"]["shape"] == outputs["probabilities"]["shape"]
    assert np.allclose(
        np.array(answer["outputs"]["probabilities"]["data"]).reshape(-1),
        outputs["probabilities"]["data"],
        atol=1e-6,
    )
    ids = answer["outputs"]["request_id"]["data"]
    assert len(set(ids)) == 4 and not set(ids) & set(rest["parameters"]["request_ids"])
    assert answer["parameters"] == {
        "model_versions": ",".join([version] * 4),
        "variants": "stable,stable,stable,stable",
    }

    # Errors: REST's 404 / 422 as NOT_FOUND / INVALID_ARGUMENT, naming the field.
    assert unknown_model["error"]["status"] == "StatusCode.NOT_FOUND"
    assert "'nope'" in unknown_model["error"]["message"]
    assert unknown_version["error"]["status"] == "StatusCode.NOT_FOUND"
    assert not_a_number["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert not_a_number["error"]["message"].startswith("inputs[2].datatype: x2 is numeric")
    assert missing["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert missing["error"]["message"].startswith("inputs.x3: missing input")
    assert absent_version["error"]["status"] == "StatusCode.NOT_FOUND"
    assert absent_version["error"]["message"].startswith("version: ")

    # Logged as REST's predictions are: keyed by request id, with the entity and features.
    records = read_predictions(kafka, server.service.model.topics.predictions, 8)
    events = {e.request_id: e for e in (decode(r.value(), Prediction) for r in records)}
    assert len(events) == 8
    for row, request_id in enumerate(ids):
        event = events[request_id]
        assert event.entity_id == "g-1"
        assert event.features == pytest.approx({k: v[row] for k, v in ROWS.items()})
        assert (event.model_version, event.variant) == (version, "stable")
        assert event.output == answer["outputs"]["label"]["data"][row]


def test_not_ready_is_unavailable(serve: Callable[..., Running]) -> None:
    server = serve(grpc_port=0, wait_ready=False)
    client = TritonGrpcClient(server.grpc_address)
    live, ready, model_ready, infer = client.calls(
        [
            {"call": "live"},
            {"call": "ready"},
            {"call": "model_ready", "model": server.name},
            {"call": "infer", "model": server.name, "inputs": grpc_inputs(ROWS)},
        ]
    )
    assert live == {"ok": True}
    assert ready == model_ready == {"ok": False}  # REST: 503
    assert infer["error"]["status"] == "StatusCode.UNAVAILABLE"
    assert "no model version is loaded yet" in infer["error"]["message"]


def test_the_messages_are_tritonclients_on_the_wire() -> None:
    """Every field of our messages has the number tritonclient's own stubs give it."""
    theirs = tritonclient_fields()
    ours: dict[str, dict[str, int]] = {}

    def walk(descriptor: Any) -> None:
        ours[descriptor.full_name] = {f.name: f.number for f in descriptor.fields}
        for nested in descriptor.nested_types:
            walk(nested)

    for descriptor in inference_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(descriptor)
    for message, fields in ours.items():
        assert fields == theirs[message], message
    methods = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    assert {m.name for m in methods} <= set(theirs["methods"])
