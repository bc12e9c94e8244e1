"""`rollout.stickyKey`: the request field whose value keeps a client on one version."""

from __future__ import annotations

import json
from typing import Any

import pytest

from driftline.api import parse_dynamic_model
from driftline.api.routing import RoutingTable, serves_candidate
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import InvalidInputError
from driftline.inference.oip import OipProtocol
from driftline.inference.openapi import _plain_request
from driftline.inference.plain import PlainProtocol
from driftline_testing.models import model_document

ROW = {"x1": 1.0, "x2": 2.0}
CANARY = RoutingTable(stable="1", candidate="2", mode="canary", weight=50, revision=1)


def contract(sticky_key: str | None) -> FeatureContract:
    doc = model_document("m", numeric=("x1", "x2"))
    if sticky_key is not None:
        doc["spec"]["rollout"] = {"stickyKey": sticky_key}
    return FeatureContract(parse_dynamic_model(doc).spec)


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def oip_body(parameters: dict[str, Any], n: int = 1) -> bytes:
    inputs = [
        {"name": name, "shape": [n], "datatype": "FP32", "data": [value] * n}
        for name, value in ROW.items()
    ]
    return body({"inputs": inputs, "parameters": parameters})


def test_the_default_key_is_the_entity_id() -> None:
    plain = PlainProtocol(contract(None), "m", max_rows=4)
    request = plain.decode(body({"entity_id": "e-1", "user_id": "u-1", "features": ROW}))
    assert request.sticky_keys == request.entity_ids == ["e-1"]
    oip = OipProtocol(contract(None), "m", max_rows=4)
    answer = oip.decode(oip_body({"entity_id": "e-1", "user_id": "u-1"}), None)
    assert answer.sticky_keys == answer.entity_ids == ["e-1"]


def test_plain_routes_by_the_field_the_spec_names() -> None:
    plain = PlainProtocol(contract("user_id"), "m", max_rows=4)
    one = plain.decode(body({"entity_id": "e-1", "user_id": "u-7", "features": ROW}))
    other = plain.decode(body({"entity_id": "e-2", "user_id": "u-7", "features": ROW}))
    assert (one.entity_ids, other.entity_ids) == (["e-1"], ["e-2"])  # logged as sent
    assert one.sticky_keys == other.sticky_keys == ["u-7"]
    many = plain.decode(body({"user_id": ["a", 5], "features": [ROW, ROW]}))
    assert many.sticky_keys == ["a", "5"] and many.entity_ids == [None, None]
    missing = plain.decode(body({"entity_id": "e-1", "features": ROW}))
    assert missing.sticky_keys == [None]  # no key: the stable version, as without entity_id


def test_oip_routes_by_the_parameter_the_spec_names() -> None:
    oip = OipProtocol(contract("user_id"), "m", max_rows=4)
    one = oip.decode(oip_body({"entity_id": "e-1", "user_id": "u-7"}), None)
    other = oip.decode(oip_body({"entity_id": "e-2", "user_id": "u-7"}), None)
    assert (one.entity_ids, other.entity_ids) == (["e-1"], ["e-2"])
    assert one.sticky_keys == other.sticky_keys == ["u-7"]
    many = oip.decode(oip_body({"user_id": ["a", "b"]}, n=2), None)
    assert many.sticky_keys == ["a", "b"]
    assert oip.decode(oip_body({"entity_id": "e"}), None).sticky_keys == [None]


def test_a_key_named_like_a_python_keyword_works() -> None:
    plain = PlainProtocol(contract("class"), "m", max_rows=4)
    assert plain.decode(body({"class": "k", "features": ROW})).sticky_keys == ["k"]


def test_bad_keys_name_the_field() -> None:
    plain = PlainProtocol(contract("user_id"), "m", max_rows=4)
    with pytest.raises(InvalidInputError) as caught:
        plain.decode(body({"user_id": ["a"], "features": [ROW, ROW]}))
    assert caught.value.field == "user_id"
    oip = OipProtocol(contract("user_id"), "m", max_rows=4)
    with pytest.raises(InvalidInputError) as caught:
        oip.decode(oip_body({"user_id": {"no": 1}}), None)
    assert caught.value.field == "parameters.user_id"


def test_same_key_same_variant_whatever_the_entity() -> None:
    plain = PlainProtocol(contract("user_id"), "m", max_rows=4)
    for i in range(50):
        picks = {
            serves_candidate(CANARY, key)
            for entity in ("e-1", "e-2", "e-3")
            for key in plain.decode(
                body({"entity_id": entity, "user_id": f"u-{i}", "features": ROW})
            ).sticky_keys
        }
        assert len(picks) == 1


def test_the_openapi_body_documents_the_key() -> None:
    import msgspec

    schema = msgspec.json.schema(_plain_request(contract("user_id"), 4))
    (body_schema,) = (v for k, v in schema["$defs"].items() if k == "PredictRequest")
    assert {"features", "entity_id", "request_id", "user_id"} <= set(body_schema["properties"])
