"""Event contracts: round trips, and clear refusals of malformed or foreign messages."""

from __future__ import annotations

import contextlib
import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.api import events
from driftline.api.events import (
    DriftEvent,
    EventError,
    LabeledExample,
    Outcome,
    Prediction,
    decode,
    encode,
)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
feature_values = st.one_of(finite, st.text(max_size=20), st.none())
features = st.dictionaries(
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True), feature_values, max_size=8
)


@given(
    request_id=st.text(min_size=1, max_size=40),
    feats=features,
    output=finite,
    scores=st.none() | st.lists(finite, max_size=5),
    variant=st.sampled_from(["stable", "candidate", "shadow", "baseline"]),
)
def test_prediction_round_trip(
    request_id: str, feats: dict, output: float, scores, variant: str
) -> None:
    event = Prediction(
        request_id=request_id,
        model="m",
        model_version="3",
        variant=variant,  # type: ignore[arg-type]
        features=feats,
        output=output,
        ts=1.5,
        scores=scores,
    )
    assert decode(encode(event), Prediction) == event


def test_every_event_round_trips() -> None:
    samples = [
        Outcome(request_id="r1", label=1.0, ts=2.0),
        LabeledExample(
            request_id="r1", model="m", model_version="1", variant="stable",
            features={"a": 1.0, "b": "x"}, label=1.0, output=0.0, ts_prediction=1.0, ts_label=2.0,
        ),
        DriftEvent(
            event_id="e1", model="m", model_version="1", kind="covariate", detector="ks",
            detected_at=3.0, score=0.4, features=["a"], p_value=0.001,
        ),
    ]  # fmt: skip
    for event in samples:
        assert decode(encode(event), type(event)) == event
        assert msgspec.json.decode(encode(event))["v"] == events.SCHEMA_VERSION


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "invalid Outcome"),
        (b'{"request_id": "r", "ts": 1}', "missing required field `label`"),
        (b'{"request_id": "r", "label": "cat", "ts": 1}', "Expected `float`, got `str`"),
        (b'{"v": 2, "request_id": "r", "label": 1, "ts": 1}', "schema version 2 is not supported"),
        (b'{"v": 9, "label": 1}', "schema version 9 is not supported"),
        (b'{"request_id": "r", "label": 1e999, "ts": 1}', "out of range"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        decode(data, Outcome)
    assert reason in info.value.reason


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = b'{"v": 1, "request_id": "r", "label": 0, "ts": 1, "added_later": true}'
    assert decode(data, Outcome).label == 0


def test_non_finite_output_cannot_be_logged_as_a_number() -> None:
    event = Prediction(
        request_id="r", model="m", model_version="1", variant="stable", features={},
        output=math.nan, ts=1.0,
    )  # fmt: skip
    with pytest.raises(EventError):
        decode(encode(event), Prediction)


@given(st.binary(max_size=200))
def test_decoder_never_fails_with_anything_but_event_error(data: bytes) -> None:
    with contextlib.suppress(EventError):
        decode(data, LabeledExample)
