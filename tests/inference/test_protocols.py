"""Request validation of both routes: the rows the model gets, and 422s that name the field."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.api import parse_dynamic_model
from driftline.inference.contract import FeatureContract, Served
from driftline.inference.errors import BadRequestError, InvalidInputError
from driftline.inference.oip import OipProtocol
from driftline.inference.plain import PlainProtocol
from driftline_testing.models import model_document

# The service silences numpy's overflow warning (values beyond float32 are refused by
# name); pytest resets warning filters per test, so say it again here.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


@pytest.fixture(scope="module")
def contract() -> FeatureContract:
    # Categorical features between numeric ones: rows must come out numeric first.
    doc = model_document("m", numeric=("amount", "age"), categorical=("channel",))
    doc["spec"]["features"].insert(1, doc["spec"]["features"].pop())
    doc["spec"]["features"].append({"name": "class", "type": "numeric"})  # a Python keyword
    return FeatureContract(parse_dynamic_model(doc).spec)


@pytest.fixture(scope="module")
def plain(contract: FeatureContract) -> PlainProtocol:
    return PlainProtocol(contract, "m", max_rows=3)


@pytest.fixture(scope="module")
def oip(contract: FeatureContract) -> OipProtocol:
    return OipProtocol(contract, "m", max_rows=3)


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


ROW = {"amount": 12.5, "channel": "web", "age": 3, "class": -1.0}


def test_contract_order_is_numeric_then_categorical(contract: FeatureContract) -> None:
    assert contract.numeric == ("amount", "age", "class")
    assert contract.categorical == ("channel",)


def test_plain_single_row(plain: PlainProtocol) -> None:
    request = plain.decode(body({"entity_id": 42, "features": ROW}))
    assert not request.many
    assert request.entity_ids == ["42"]
    assert request.rows.numeric is not None and request.rows.categorical is not None
    assert request.rows.numeric.dtype == np.float32
    assert request.rows.numeric.tolist() == [[12.5, 3.0, -1.0]]
    assert request.rows.categorical.tolist() == [["web"]]
    assert list(request.rows.values[0]) == [12.5, 3.0, -1.0, "web"]


def test_plain_many_rows_with_one_entity_each(plain: PlainProtocol) -> None:
    other = {**ROW, "channel": 7, "amount": 1}
    request = plain.decode(
        body({"entity_id": ["a", "b"], "features": [ROW, other], "request_id": ["r1", "r2"]})
    )
    assert request.many and request.rows.n == 2
    assert request.entity_ids == ["a", "b"]
    assert request.request_ids == ["r1", "r2"]
    assert request.rows.categorical is not None
    assert request.rows.categorical[:, 0].tolist() == ["web", "7"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"features": {**ROW, "amount": "12"}}, "features.amount"),
        ({"features": {**ROW, "amount": True}}, "features.amount"),
        ({"features": {**ROW, "amount": None}}, "features.amount"),
        ({"features": {**ROW, "amount": 1e999}}, "features.amount"),
        ({"features": {**ROW, "amount": 1e39}}, "features.amount"),  # beyond float32
        ({"features": {**ROW, "channel": 1.5}}, "features.channel"),
        ({"features": {k: v for k, v in ROW.items() if k != "age"}}, "features.age"),
        ({"features": [ROW, {k: v for k, v in ROW.items() if k != "class"}]}, "features[1].class"),
        ({"features": [ROW, {**ROW, "age": float("inf")}]}, "features[1].age"),
        ({"features": {**ROW, "age": float("nan")}}, "features.age"),
        ({"features": []}, "features"),
        ({"features": [ROW] * 4}, "features"),
        ({"features": [ROW, ROW], "entity_id": ["a"]}, "entity_id"),
        ({"features": [ROW, ROW], "request_id": "r"}, "request_id"),
        ({"features": ROW, "request_id": ""}, "request_id"),
        ({"features": 3}, "features"),
        ({"rows": [ROW]}, "features"),
    ],
)
def test_plain_refuses_bad_input_naming_the_field(
    plain: PlainProtocol, doc: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        plain.decode(body(doc))
    assert caught.value.status == 422
    assert caught.value.field == field, caught.value.message


def test_plain_malformed_json_is_a_400(plain: PlainProtocol) -> None:
    with pytest.raises(BadRequestError):
        plain.decode(b'{"features": {')


def test_plain_answers_carry_request_ids(plain: PlainProtocol) -> None:
    request = plain.decode(body({"features": [ROW, ROW]}))
    outputs = [np.array([1, 0], np.int64), np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)]
    served = Served(["r1", "r2"], outputs, ["3", "4"], ["stable", "candidate"])
    answer = orjson.loads(plain.encode(request, served))
    assert answer["predictions"][1] == {
        "request_id": "r2",
        "model_version": "4",
        "variant": "candidate",
        "label": 0,
        "probabilities": [0.5, 0.5],
    }


# --- Open Inference Protocol -----------------------------------------------------------


def tensors(n: int = 2) -> list[dict[str, Any]]:
    return [
        {"name": "amount", "shape": [n], "datatype": "FP32", "data": [1.5] * n},
        {"name": "age", "shape": [n, 1], "datatype": "INT64", "data": [[3]] * n},
        {"name": "class", "shape": [n], "datatype": "FP64", "data": [0.5] * n},
        {"name": "channel", "shape": [n], "datatype": "BYTES", "data": ["web", "app"][:n]},
    ]


def test_oip_one_tensor_per_feature(oip: OipProtocol) -> None:
    request = oip.decode(
        body({"id": "x", "inputs": tensors(), "parameters": {"entity_id": "e"}}), None
    )
    assert request.id == "x" and request.entity_ids == ["e", "e"]
    assert request.rows.numeric is not None and request.rows.categorical is not None
    assert request.rows.numeric.tolist() == [[1.5, 3.0, 0.5]] * 2
    assert request.rows.categorical[:, 0].tolist() == ["web", "app"]


def test_oip_packed_tensors(oip: OipProtocol) -> None:
    request = oip.decode(
        body(
            {
                "inputs": [
                    {"name": "numeric", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                    {"name": "categorical", "shape": [1, 1], "datatype": "BYTES", "data": ["c"]},
                ]
            }
        ),
        None,
    )
    assert request.rows.numeric is not None
    assert request.rows.numeric.tolist() == [[1, 2, 3]]
    assert list(request.rows.values[0]) == [1, 2, 3, "c"]


def test_oip_binary_tensors(oip: OipProtocol) -> None:
    amount = np.array([1.5, 2.5], np.float32).tobytes()
    age = np.array([3, 4], np.int32).tobytes()
    klass = np.array([0, 1], np.float64).tobytes()
    channel = b"".join(struct.pack("<I", len(s)) + s for s in (b"web", b"pos"))
    inputs = [
        {"name": "amount", "shape": [2], "datatype": "FP32"},
        {"name": "age", "shape": [2], "datatype": "INT32"},
        {"name": "class", "shape": [2], "datatype": "FP64"},
        {"name": "channel", "shape": [2], "datatype": "BYTES"},
    ]
    for tensor, blob in zip(inputs, (amount, age, klass, channel), strict=True):
        tensor["parameters"] = {"binary_data_size": len(blob)}
    head = body({"inputs": inputs, "parameters": {"binary_data_output": True}})
    request = oip.decode(head + amount + age + klass + channel, len(head))
    assert request.rows.numeric is not None and request.rows.categorical is not None
    assert request.rows.numeric.tolist() == [[1.5, 3, 0], [2.5, 4, 1]]
    assert request.rows.categorical[:, 0].tolist() == ["web", "pos"]
    assert request.binary_output


def change(index: int, **fields: Any) -> list[dict[str, Any]]:
    inputs = tensors()
    inputs[index] = {**inputs[index], **fields}
    return inputs


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        (change(0, datatype="BYTES"), "inputs[0].datatype"),
        (change(3, datatype="FP32"), "inputs[3].datatype"),
        (change(0, data=["1.5", "2"]), "inputs[0].data"),
        (change(0, data=[True, False]), "inputs[0].data"),
        (change(0, data=[1.0]), "inputs[0].data"),
        (change(0, shape=[2, 2]), "inputs[0].shape"),
        (change(0, shape=[3], data=[1, 2, 3]), "inputs[1].shape"),
        (change(0, name="amout"), "inputs[0].name"),
        (change(0, data=[1.0, 1e39]), "inputs[1].amount"),
        (change(3, data=["web", 3.5]), "inputs[3].data"),
        (tensors()[1:], "inputs.amount"),
        ([], "inputs"),
    ],
)
def test_oip_refuses_bad_input_naming_the_field(
    oip: OipProtocol, inputs: list[dict[str, Any]], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        oip.decode(body({"inputs": inputs}), None)
    assert caught.value.field == field, caught.value.message


def test_oip_nan_is_a_422_naming_the_input(oip: OipProtocol) -> None:
    with pytest.raises(InvalidInputError) as caught:
        oip.decode(body({"inputs": change(2, data=[float("nan"), 1.0])}), None)
    assert caught.value.field == "inputs[2].data[0]"


def test_oip_binary_outputs_follow_the_json_header(oip: OipProtocol) -> None:
    request = oip.decode(
        body({"inputs": tensors(), "parameters": {"binary_data_output": True}}), None
    )
    outputs = [np.array([1, 0], np.int64), np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)]
    payload, length = oip.encode(request, Served(["a", "bb"], outputs, ["1", "1"], ["stable"] * 2))
    assert length is not None
    head = orjson.loads(payload[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [16, 16, 4 + 1 + 4 + 2]
    assert head["parameters"]["request_ids"] == ["a", "bb"]
    blob = payload[length:]
    assert np.frombuffer(blob[:16], np.int64).tolist() == [1, 0]


def packed(data: Any, shape: list[int] | None = None) -> list[dict[str, Any]]:
    numeric = {"name": "numeric", "shape": shape or [1, 3], "datatype": "FP32", "data": data}
    return [numeric, {"name": "categorical", "shape": [1, 1], "datatype": "BYTES", "data": ["c"]}]


# Numeric data as clients send it: flat (checked by the fast path) and nested (the walk).
@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        (packed([1.0, True, 3.0]), "inputs[0].data"),
        (packed([[1.0, True, 3.0]]), "inputs[0].data"),
        (packed([1.0, "2", 3.0]), "inputs[0].data"),
        (packed([[1.0, "2", 3.0]]), "inputs[0].data"),
        (packed([1.0, None, 3.0]), "inputs[0].data"),
        (packed([1.0, {"a": 1}, 3.0]), "inputs[0].data"),
        (packed([[1.0, 2.0], [3.0]], [2, 3]), "inputs[0].data"),
        (packed([1.0, 2.0]), "inputs[0].data"),
        (packed([1.0, 2.0, 3.0, 4.0]), "inputs[0].data"),
        (packed([1.0, 10**40, 3.0]), "inputs[0].age"),
        (packed([1.0, 2.0, 3.0], [-1, 3]), "inputs[0].shape"),
        (packed([1.0, 2.0, 3.0], [1, 2]), "inputs[0].shape"),
        (change(0, data=[1.0, False]), "inputs[0].data"),
        (change(1, data=[3, [4]]), "inputs[1].data"),
        (change(0, data=[1.0]), "inputs[0].data"),
        (change(0, data=[1.0, 1e39]), "inputs[1].amount"),
    ],
)
def test_oip_refuses_bad_numeric_data_naming_the_field(
    oip: OipProtocol, inputs: list[dict[str, Any]], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        oip.decode(body({"inputs": inputs}), None)
    assert caught.value.status == 422
    assert caught.value.field == field, caught.value.message


@pytest.mark.parametrize(
    "data", [[1, 2, 3], [1.5, 2, -3e5], [[1, 2, 3]], [2**70, 0, 1], [0.0, -0.0, 7]]
)
def test_oip_takes_numbers_flat_or_nested(oip: OipProtocol, data: list[Any]) -> None:
    request = oip.decode(body({"inputs": packed(data)}), None)
    assert request.rows.numeric is not None
    flat = np.asarray(data, dtype=np.float64).reshape(-1)
    assert request.rows.numeric.reshape(-1).tolist() == flat.astype(np.float32).tolist()
    assert list(request.rows.values[0]) == [*flat.tolist(), "c"]


def test_oip_json_answer_is_the_same_whether_outputs_are_named_or_not(oip: OipProtocol) -> None:
    outputs = [np.array([1, 0], np.int64), np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)]
    served = Served(["a", "bb"], outputs, ["1", "2"], ["stable", "candidate"])
    names = [*oip.output_names, "request_id"]
    implicit = oip.decode(body({"inputs": tensors()}), None)
    explicit = oip.decode(
        body({"inputs": tensors(), "outputs": [{"name": n} for n in names]}), None
    )
    assert oip.encode(implicit, served) == oip.encode(explicit, served)
    answer = orjson.loads(oip.encode(implicit, served)[0])
    assert [o["name"] for o in answer["outputs"]] == names
    assert answer["outputs"][1] == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [0.25, 0.75, 0.5, 0.5],
    }
