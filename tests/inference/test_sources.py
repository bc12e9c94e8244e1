"""Sourced features at the request path: not sent, refused when sent, filled before the model.

The fill is driven here by a stand-in for the Redis script (what Redis answers is
tested against real Redis in tests/integration/common/test_entity_aggregates.py and
tests/integration/inference/test_sourced_features.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import numpy as np
import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from driftline.api import parse_dynamic_model
from driftline.api.spec import DynamicModelSpec
from driftline.common.entity_aggregates import EXCHANGE
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import FeatureSourceUnavailableError, InvalidInputError
from driftline.inference.oip import OipProtocol
from driftline.inference.openapi import _plain_request
from driftline.inference.plain import PlainProtocol
from driftline.inference.sources import SourcedFeatures
from driftline_testing.models import model_document

COUNT = {"name": "visits", "source": {"aggregate": {"function": "count", "windowSeconds": 600}}}
MEAN = {
    "name": "mean_amount",
    "source": {"aggregate": {"function": "mean", "of": "amount", "default": -1}},
}
LABELS = {
    "name": "label_rate",
    "source": {"aggregate": {"function": "mean", "of": "outcome"}, "onUnavailable": "refuse"},
}


def spec_with(*sourced: dict[str, Any]) -> DynamicModelSpec:
    doc = model_document("m", numeric=("amount",), categorical=("channel",))
    doc["spec"]["features"][1:1] = list(sourced)  # between the request's features
    return parse_dynamic_model(doc).spec


@pytest.fixture
def contract() -> FeatureContract:
    return FeatureContract(spec_with(COUNT, MEAN))


def test_the_plain_route_takes_rows_without_sourced_features(contract: FeatureContract) -> None:
    plain = PlainProtocol(contract, "m", max_rows=4)
    request = plain.decode(json.dumps({"features": {"amount": 2.5, "channel": "web"}}).encode())
    assert contract.names == ("amount", "visits", "mean_amount", "channel")
    assert list(request.rows.values[0]) == [2.5, 0.0, 0.0, "web"]  # placeholders until filled
    schema = json.dumps(msgspec.json.schema(_plain_request(contract, 4)))  # the OpenAPI body
    assert "amount" in schema and "visits" not in schema


@pytest.mark.parametrize("value", [3, 0.5, "x", None])
def test_a_sourced_value_sent_by_the_client_is_refused_by_name(
    contract: FeatureContract, value: Any
) -> None:
    plain = PlainProtocol(contract, "m", max_rows=4)
    row = {"amount": 2.5, "channel": "web", "visits": value}
    with pytest.raises(InvalidInputError) as caught:
        plain.decode(json.dumps({"features": [row, row]}).encode())
    assert caught.value.field == "features[0].visits"
    assert "found at serving" in caught.value.message


def test_oip_takes_per_feature_tensors_without_them_and_refuses_them(
    contract: FeatureContract,
) -> None:
    oip = OipProtocol(contract, "m", max_rows=4)
    amount = {"name": "amount", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}
    channel = {"name": "channel", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
    rows = oip.decode(json.dumps({"inputs": [amount, channel]}).encode(), None).rows
    assert [list(v) for v in rows.values] == [[1.0, 0.0, 0.0, "a"], [2.0, 0.0, 0.0, "b"]]
    visits = {"name": "visits", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}
    with pytest.raises(InvalidInputError, match="found at serving") as caught:
        oip.decode(json.dumps({"inputs": [amount, channel, visits]}).encode(), None)
    assert caught.value.field == "inputs[2].name"
    packed = {"name": "numeric", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}
    bytes_ = {"name": "categorical", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}
    with pytest.raises(InvalidInputError, match="found at serving"):
        oip.decode(json.dumps({"inputs": [packed, bytes_]}).encode(), None)
    inputs = [i["name"] for i in oip.metadata(["1"], "onnx")["inputs"]]
    assert inputs == ["amount", "channel"]


class FakeScript:
    """What the Lua script answers: a (count, sum, last) per reading step, or a failure."""

    def __init__(self, replies: list[list[Any]] | Exception) -> None:
        self.replies = replies
        self.calls: list[tuple[list[str], list[str]]] = []

    async def __call__(self, keys: list[str], args: list[str]) -> list[Any]:
        self.calls.append((keys, args))
        if isinstance(self.replies, Exception):
            raise self.replies
        return self.replies.pop(0)


class FakeClient:
    def __init__(self, script: FakeScript) -> None:
        self.script = script

    def register_script(self, text: str) -> FakeScript:
        assert text == EXCHANGE
        return self.script


def decoded(contract: FeatureContract, rows: list[dict[str, Any]]) -> Any:
    return PlainProtocol(contract, "m", max_rows=4).decode(json.dumps({"features": rows}).encode())


def test_fill_writes_the_values_before_each_row_into_input_and_log(
    contract: FeatureContract,
) -> None:
    spec = spec_with(COUNT, MEAN)
    sources = SourcedFeatures.for_model(spec, contract, "driftline:test:m")
    assert sources is not None
    # visits (count of requests, 600 s) and mean_amount (of amount, 3600 s): two states.
    empty = [b"0", b"0", b""]
    script = FakeScript([[[b"4", b"10", b"1"], empty, empty, [b"2", b"7", b"3.5"]]])
    sources.connect(FakeClient(script))
    request = decoded(
        contract,
        [
            {"amount": 1.5, "channel": "a"},
            {"amount": 9, "channel": "b"},
            {"amount": 4, "channel": "c"},
        ],
    )
    asyncio.run(sources.fill(request.rows, ["u1", None, "u2"]))
    keys, args = script.calls[0]
    assert keys == [
        "driftline:test:m:agg::600:u1",
        "driftline:test:m:agg::600:u2",
        "driftline:test:m:agg:amount:3600:u1",
        "driftline:test:m:agg:amount:3600:u2",
    ]
    assert args[2::4] == ["ra", "ra", "ra", "ra"]  # read, then count this request
    assert args[4::4] == ["0.0", "0.0", "1.5", "4.0"]  # the events' values
    numeric = request.rows.numeric
    # Row 1 has no entity: defaults (count 0, mean's default -1), nothing read or written.
    np.testing.assert_allclose(numeric[:, 1], [4, 0, 0])
    np.testing.assert_allclose(numeric[:, 2], [-1, -1, 3.5])
    assert [list(v) for v in request.rows.values] == [
        [1.5, 4.0, -1.0, "a"],
        [9.0, 0.0, -1.0, "b"],
        [4.0, 0.0, 3.5, "c"],
    ]


def counted(feature: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "driftline_inference_feature_source_errors_total",
        {"feature": feature, "outcome": outcome},
    )
    return value or 0.0


def test_redis_down_serves_the_default_and_counts_it(contract: FeatureContract) -> None:
    sources = SourcedFeatures.for_model(spec_with(COUNT, MEAN), contract, "p")
    assert sources is not None
    sources.connect(FakeClient(FakeScript(RedisConnectionError("refused"))))
    before = counted("visits", "defaulted")
    request = decoded(contract, [{"amount": 1.5, "channel": "a"}])
    asyncio.run(sources.fill(request.rows, ["u1"]))
    assert list(request.rows.values[0]) == [1.5, 0.0, -1.0, "a"]
    assert counted("visits", "defaulted") == before + 1


def test_redis_down_refuses_a_feature_that_says_so() -> None:
    spec = spec_with(COUNT, LABELS)
    contract = FeatureContract(spec)
    sources = SourcedFeatures.for_model(spec, contract, "p")
    assert sources is not None
    script = FakeScript(TimeoutError())
    sources.connect(FakeClient(script))
    before = counted("label_rate", "refused")
    request = decoded(contract, [{"amount": 1.5, "channel": "a"}])
    with pytest.raises(FeatureSourceUnavailableError) as caught:
        asyncio.run(sources.fill(request.rows, ["u1"]))
    assert (caught.value.status, caught.value.field) == (503, "features.label_rate")
    assert counted("label_rate", "refused") == before + 1
    # Outcome aggregates are only read at serving: the joiner adds the labels.
    assert script.calls[0][1][2::4] == ["ra", "r"]


def test_a_model_without_sourced_features_builds_nothing() -> None:
    spec = spec_with()
    assert SourcedFeatures.for_model(spec, FeatureContract(spec), "p") is None


def test_requests_of_one_loop_turn_share_one_script_call() -> None:
    single = FeatureContract(spec_with(COUNT))
    sources = SourcedFeatures.for_model(spec_with(COUNT), single, "p")
    assert sources is not None
    script = FakeScript([[[b"1", b"0", b""], [b"7", b"0", b""]]])
    sources.connect(FakeClient(script))
    first, second = (decoded(single, [{"amount": 1, "channel": "a"}]) for _ in range(2))

    async def both() -> None:
        await asyncio.gather(sources.fill(first.rows, ["u1"]), sources.fill(second.rows, ["u2"]))

    asyncio.run(both())
    assert [keys for keys, _ in script.calls] == [["p:agg::600:u1", "p:agg::600:u2"]]
    assert (first.rows.values[0][1], second.rows.values[0][1]) == (1.0, 7.0)
