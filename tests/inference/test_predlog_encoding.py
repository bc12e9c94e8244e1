"""The prediction log's events: built from a struct of the model's feature names (not a
dict per row), they must be byte for byte the events the dict gave."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from driftline.api.events import Prediction, encode
from driftline.common.connections import KafkaConnection
from driftline.inference.contract import MarkedRow
from driftline.inference.predlog import LogRecord, PredictionLog

NAMES = ["amount", "class", "a b", "é", "f0", "channel"]


@pytest.fixture
def log() -> Iterator[PredictionLog]:
    log = PredictionLog(
        KafkaConnection("127.0.0.1:1"), "t.predictions", "m", NAMES, "classification",
        flagged=True, capacity=10, flush_seconds=0.01, producer_overrides={"log_level": 0},
    )  # fmt: skip
    yield log
    asyncio.run(log.close(timeout=0.1))


def expected(record: LogRecord, i: int) -> bytes:
    """The event as the log built it with a dict of features."""
    request_ids, entity_ids, values, version, variant, outputs, ts, explored = record
    extra: dict[str, Any] = {}
    if explored is not None:
        extra = {"explored": explored[0][i], "served": explored[1][i]}
        extra["propensity"] = explored[2][i]
    return encode(
        Prediction(
            request_id=request_ids[i],
            model="m",
            model_version=version,
            variant=variant,
            features=dict(zip(NAMES, values[i])),  # noqa: B905
            output=float(outputs[0].tolist()[i]),
            ts=ts,
            entity_id=entity_ids[i],
            scores=outputs[1].tolist()[i],
            flags=getattr(values[i], "flags", None),
            **extra,
        )
    )


ROWS = [
    (1.5, -2.0, 3, 1e-7, None, "web"),
    MarkedRow([10.0, 0.0, 1, 2.0, 0.5, "a,b}"], {"amount": "clip"}),
    (0.1, 0.2, 0.3),  # fewer values than names: as many as both have, as before
]
OUTPUTS = [np.array([1, 0, 1], np.int64), np.array([[0.25, 0.75], [0.5, 0.5], [0, 1]], np.float32)]


@pytest.mark.parametrize(
    "explored", [None, ([True, False, False], [0.0, None, None], [0.1, 0.9, 0.9])]
)
def test_events_are_those_a_dict_of_features_gave(log: PredictionLog, explored: Any) -> None:
    record: LogRecord = (
        ["r1", "r2", "r3"], ["e1", None, "e3"], ROWS, "4", "stable", OUTPUTS, 1.25, explored
    )  # fmt: skip
    payloads = log._payloads(record)
    assert [request_id for request_id, _, _ in payloads] == ["r1", "r2", "r3"]
    assert [payload for _, payload, _ in payloads] == [expected(record, i) for i in range(3)]


def test_a_row_that_cannot_be_encoded_is_left_out(log: PredictionLog) -> None:
    rows: list[Any] = [(1.0,) * 5 + ("x",), (object(),) + (1.0,) * 5]
    outputs = [o[:2] for o in OUTPUTS]
    record: Any = (["r1", "r2"], [None, None], rows, "4", "stable", outputs, 1.0, None)
    assert [request_id for request_id, _, _ in log._payloads(record)] == ["r1"]
