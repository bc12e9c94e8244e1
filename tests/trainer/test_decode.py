"""Labeled records whose features break the value rules go to the dead letters, alone."""

from __future__ import annotations

from typing import Any

import msgspec

from driftline.api.events import LabeledExample
from driftline.api.spec import FeatureSpec
from driftline.common.features import FeatureLayout
from driftline.trainer.decode import LabeledDecoder
from driftline.trainer.encoding import CategoricalEncoder

FEATURES = [FeatureSpec(name="x"), FeatureSpec(name="kind", type="categorical", hash_buckets=4)]


class Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send(self, msg: Record, reason: str) -> None:
        self.sent.append((msg.offset(), reason))


def record(offset: int, **features: Any) -> Record:
    event = LabeledExample(
        request_id=f"r{offset}",
        model="m",
        model_version="1",
        variant="stable",
        features=features,
        label=1.0,
        output=1.0,
        ts_prediction=0.0,
        ts_label=0.0,
    )
    return Record(msgspec.json.encode(event), offset)


def test_bad_feature_values_are_dead_lettered_and_the_rest_learned() -> None:
    layout = FeatureLayout.from_features(FEATURES)
    dead = DeadLetters()
    decoder = LabeledDecoder(
        layout, CategoricalEncoder(layout.categorical), "m", "regression", 0, dead
    )
    decoded = decoder.decode(
        [
            record(0, x=1.5, kind="a"),
            record(1, x="3.5", kind="a"),  # text is no number, as in serving
            record(2, x=1e39, kind="a"),  # beyond float32
            record(3, x=2, kind=5),  # an integer category is its text
            record(4, x=2.0, kind=5.0),  # a float is no category
            record(5, x=None, kind=None),  # gaps are missing values
        ]
    )
    assert [offset for offset, _ in dead.sent] == [1, 2, 4]
    assert "feature 'x': must be a number, got the text '3.5'" in dead.sent[0][1]
    assert "feature 'x': must be a finite number" in dead.sent[1][1]
    assert "feature 'kind': must be text or an integer" in dead.sent[2][1]
    assert decoded.dead == 3
    assert decoded.examples.categorical[:, 0].tolist() == ["a", "5", ""]
    assert decoded.examples.numeric[:2, 0].tolist() == [1.5, 2.0]
