"""The gRPC face's mapping: messages to the same rows REST decodes, answers to messages,
and every domain error to the gRPC status code of its REST status."""

from __future__ import annotations

import struct
from typing import Any

import grpc
import numpy as np
import orjson
import pytest

from driftline.api import parse_dynamic_model
from driftline.inference import errors
from driftline.inference.contract import FeatureContract, Served
from driftline.inference.grpc_face import STATUS_CODES, decode_request, parameters, status_of
from driftline.inference.oip import OipProtocol, raw_tensor
from driftline.inference.oip_grpc import inference_pb2
from driftline_testing.models import model_document

pb: Any = inference_pb2
ROWS = {"amount": [12.5, -1.0], "age": [3.0, 4.0], "channel": ["web", "shop"]}


@pytest.fixture(scope="module")
def oip() -> OipProtocol:
    doc = model_document("m", numeric=("amount", "age"), categorical=("channel",))
    return OipProtocol(FeatureContract(parse_dynamic_model(doc).spec), "m", max_rows=8)


def rest_rows(oip: OipProtocol) -> Any:
    inputs = [
        {"name": n, "shape": [2], "datatype": "BYTES" if n == "channel" else "FP32", "data": v}
        for n, v in ROWS.items()
    ]
    return oip.decode(orjson.dumps({"inputs": inputs}), None).rows


def message(raw: bool, **extra: Any) -> Any:
    request = pb.ModelInferRequest(model_name="m", **extra)
    for name, values in ROWS.items():
        datatype = "BYTES" if name == "channel" else "FP32"
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[2])
        if raw:
            if datatype == "BYTES":
                blob = b"".join(struct.pack("<I", len(v)) + v.encode() for v in values)
            else:
                blob = np.array(values, np.float32).tobytes()
            request.raw_input_contents.append(blob)
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        else:
            tensor.contents.fp32_contents.extend(values)
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "contents"])
def test_a_message_decodes_to_the_rows_rest_decodes(oip: OipProtocol, raw: bool) -> None:
    request = message(raw, id="abc")
    request.parameters["entity_id"].int64_param = 42
    decoded = oip.request(*decode_request(request))
    want = rest_rows(oip)
    assert decoded.rows.values == want.values
    assert np.array_equal(decoded.rows.numeric, want.numeric)
    assert decoded.id == "abc" and decoded.entity_ids == ["42", "42"]


def test_messages_that_do_not_add_up_name_the_field(oip: OipProtocol) -> None:
    short = message(raw=True)
    del short.raw_input_contents[-1]
    with pytest.raises(errors.InvalidInputError) as caught:
        decode_request(short)
    assert caught.value.field == "raw_input_contents"

    both = message(raw=True)
    both.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(errors.InvalidInputError) as caught:
        decode_request(both)
    assert caught.value.field == "inputs[0].contents"

    half = pb.ModelInferRequest(model_name="m")
    half.inputs.add(name="amount", datatype="FP16", shape=[1]).contents.fp32_contents.append(1)
    with pytest.raises(errors.InvalidInputError) as caught:
        decode_request(half)
    assert caught.value.field == "inputs[0].datatype"

    wrong = message(raw=False)
    wrong.inputs[1].datatype = "BYTES"  # age is numeric
    with pytest.raises(errors.InvalidInputError) as caught:
        oip.request(*decode_request(wrong))
    assert caught.value.field == "inputs[1].datatype"


def test_parameters_are_plain_values() -> None:
    request = pb.ModelInferRequest()
    request.parameters["a"].string_param = "x"
    request.parameters["b"].int64_param = -3
    request.parameters["c"].bool_param = True
    request.parameters["d"].double_param = 0.5
    request.parameters["e"].uint64_param = 2**63
    assert parameters(request.parameters) == {"a": "x", "b": -3, "c": True, "d": 0.5, "e": 2**63}


def test_outputs_are_rests_outputs_as_raw_bytes(oip: OipProtocol) -> None:
    request = oip.request(*decode_request(message(raw=True)))
    served = Served(
        ["r1", "r2"],
        [np.array([1, 0], np.int64), np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)],
        ["3", "3"],
        ["stable", "stable"],
    )
    outputs = list(oip.outputs(request, served))
    assert [(n, d, s) for n, d, s, _, _ in outputs] == [
        ("label", "INT64", [2]),
        ("probabilities", "FP32", [2, 2]),
        ("request_id", "BYTES", [2]),
    ]
    assert raw_tensor(outputs[0][3]) == np.array([1, 0], np.int64).tobytes()
    assert raw_tensor(outputs[2][3]) == struct.pack("<I", 2) + b"r1" + struct.pack("<I", 2) + b"r2"
    assert oip.version(served) == "3"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.BadRequestError("not JSON"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InvalidInputError("bad", field="inputs[0]"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.PayloadTooLargeError("big", field="body"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.ModelNotFoundError("no", field="name"), grpc.StatusCode.NOT_FOUND),
        (errors.OverloadedError("full"), grpc.StatusCode.UNAVAILABLE),
        (errors.ModelNotReadyError("none"), grpc.StatusCode.UNAVAILABLE),
        (errors.FeatureSourceUnavailableError("redis"), grpc.StatusCode.UNAVAILABLE),
        (errors.ModelFailedError("onnx"), grpc.StatusCode.INTERNAL),
    ],
)
def test_every_domain_error_has_the_code_of_its_rest_status(
    error: errors.InferenceError, code: grpc.StatusCode
) -> None:
    got, details, metadata = status_of(error)
    assert got == code and error.status in STATUS_CODES
    if error.field is not None:
        assert details == f"{error.field}: {error.message}"
        assert ("field", error.field) in metadata
    else:
        assert details == error.message
    if "retry-after" in error.headers:
        assert ("retry-after", error.headers["retry-after"]) in metadata
