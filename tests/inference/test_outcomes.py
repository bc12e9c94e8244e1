"""Validation of the outcomes route's body: what becomes an `Outcome`, and 422s naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from driftline.api.events import Outcome
from driftline.inference.errors import BadRequestError, InvalidInputError
from driftline.inference.outcomes import OutcomeDecoder
from driftline_testing.models import model_document, write_model_file


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@pytest.fixture
def classes3() -> OutcomeDecoder:
    return OutcomeDecoder("classification", 3, max_rows=4)


@pytest.fixture
def regression() -> OutcomeDecoder:
    return OutcomeDecoder("regression", 2, max_rows=4)


def test_one_outcome_or_a_list(classes3: OutcomeDecoder) -> None:
    assert classes3.decode(body({"request_id": "r1", "label": 2}), now=5.0) == [
        Outcome(request_id="r1", label=2.0, ts=5.0)
    ]
    many = classes3.decode(
        body([{"request_id": "a", "label": 0}, {"request_id": "b", "label": 1.0}])
    )
    assert [(o.request_id, o.label) for o in many] == [("a", 0.0), ("b", 1.0)]


def test_a_repeated_request_id_is_kept_once(classes3: OutcomeDecoder) -> None:
    rows = [{"request_id": "a", "label": 0}, {"request_id": "a", "label": 1}]
    assert [o.label for o in classes3.decode(body(rows))] == [0.0]


def test_regression_takes_a_finite_target(regression: OutcomeDecoder) -> None:
    assert regression.decode(body({"request_id": "r", "target": 12.5}))[0].label == 12.5
    assert regression.decode(body({"request_id": "r", "label": -3}))[0].label == -3.0


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"request_id": "r", "label": 1, "score": 3}, "score", "unknown field 'score'"),
        ({"request_id": "r", "target": 1.5}, "target", "this model's outcome is `label`"),
        ({"request_id": "r", "label": 3}, "label", "integer from 0 to 2"),
        ({"request_id": "r", "label": 1.5}, "label", "class index"),
        ({"request_id": "r", "label": "yes"}, "label", "class index"),
        ({"request_id": "r", "label": True}, "label", "class index"),
        ({"request_id": "r"}, "label", "label is missing"),
        ({"label": 1}, "request_id", "request_id must be"),
        ({"request_id": "", "label": 1}, "request_id", "request_id must be"),
        ([{"request_id": "a", "label": 1}, {"request_id": "b", "label": 7}], "[1].label", "row 1"),
        ([{"request_id": "a", "label": 1}, {"request_id": "b", "x": 1}], "[1].x", "row 1"),
        ([], "body", "empty"),
        ([{"request_id": str(i), "label": 0} for i in range(5)], "body", "at most 4"),
        ([1], "[0]", "an outcome is an object"),
    ],
)
def test_refusals_name_the_field(
    classes3: OutcomeDecoder, doc: Any, field: str, words: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        classes3.decode(body(doc))
    assert caught.value.field == field
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"request_id": "r", "target": NaN}', "target"),
        (b'{"request_id": "r", "target": "12"}', "target"),
        (b'[{"request_id": "r", "target": 1}, {"request_id": "s", "target": 1e999}]', "[1].target"),
        (b'{"request_id": "r", "target": 1, "label": 2}', "target"),
    ],
)
def test_regression_refuses_what_is_not_a_finite_number(
    regression: OutcomeDecoder, raw: bytes, field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        regression.decode(raw)
    assert caught.value.field == field


@pytest.mark.parametrize("raw", [b'{"request_id": ', b"\xff\xfe{}", b""])
def test_broken_json_is_a_400(classes3: OutcomeDecoder, raw: bytes) -> None:
    with pytest.raises(BadRequestError):
        classes3.decode(raw)


def test_the_openapi_document_has_the_outcomes_route(tmp_path: Path) -> None:
    from driftline.inference.app import create_app
    from driftline.inference.openapi import document
    from driftline.inference.service import InferenceService
    from driftline.inference.settings import InferenceSettings

    path = write_model_file(tmp_path / "m.yaml", model_document("m", classes=3))
    door = create_app(InferenceService(InferenceSettings(model_file=path, metrics_port=0)))
    doc = document(door.api, "m", door.service.contract, 7)
    operation = doc["paths"]["/v1/models/{name}/outcomes"]["post"]
    assert set(operation["responses"]) == {"202", "400", "404", "413", "422", "503"}
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    many, one = body["anyOf"]
    assert one == {"$ref": "#/components/schemas/Outcome"}
    assert many["maxItems"] == 7 and many["minItems"] == 1
    row = doc["components"]["schemas"]["Outcome"]
    assert row["properties"]["label"] == {"type": "integer", "minimum": 0, "maximum": 2}
    assert row["additionalProperties"] is False and row["required"] == ["request_id", "label"]
    assert "failed" in doc["components"]["schemas"]["Error"]["properties"]
