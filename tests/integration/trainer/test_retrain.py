"""Scheduled retraining on a real broker and MLflow: the window read, the version, its tags."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from driftline.api import artifacts
from driftline.api.events import LabeledExample, encode
from driftline.common.kafka import DeadLetters
from driftline.common.streams import CovariateShiftStream, Rows, SEAStream
from driftline.trainer.__main__ import main
from driftline.trainer.adapter import TAG_ADAPTER_BASE
from driftline.trainer.bootstrap import bootstrap
from driftline.trainer.decode import LabeledDecoder
from driftline.trainer.encoding import CategoricalEncoder
from driftline.trainer.retrain import (
    TAG_HISTORY_ENDS,
    TAG_ROWS,
    TAG_TRAINING,
    read_history,
    retrain,
)
from driftline.trainer.versions import ModelVersions

pytestmark = pytest.mark.integration

HOUR = 3600.0


def produce_at(case: Any, rows: Rows, stamps: np.ndarray[Any, Any]) -> set[tuple[int, int]]:
    """Labeled examples with these record timestamps; the (partition, offset) of each."""
    written: set[tuple[int, int]] = set()

    def delivered(err: Any, msg: Any) -> None:
        assert err is None
        written.add((msg.partition(), msg.offset()))

    for i, (features, label, ts) in enumerate(
        zip(rows.features(), rows.labels.tolist(), stamps.tolist(), strict=True)
    ):
        event = LabeledExample(
            request_id=f"{case.name}-{rows.start + i}",
            model=case.name,
            model_version="1",
            variant="stable",
            features=features,  # type: ignore[arg-type]
            label=float(label),
            output=float(label),
            ts_prediction=ts,
            ts_label=ts,
        )
        case.producer.produce(
            case.topics.labeled,
            key=event.request_id.encode(),
            value=encode(event),
            timestamp=int(ts * 1000),
            on_delivery=delivered,
        )
    assert case.producer.flush(30) == 0
    return written


def ranges(written: set[tuple[int, int]], topic: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for partition in sorted({p for p, _ in written}):
        mine = [o for p, o in written if p == partition]
        out[f"{topic}:{partition}"] = [min(mine), max(mine)]
    return out


def test_a_retrain_reads_exactly_the_window_and_publishes_once(
    trainer_case: Callable[..., Any],
) -> None:
    stream = CovariateShiftStream(seed=5, schedule=[(0, 0), (3000, 1)])
    case = trainer_case(
        stream,
        training={
            "mode": "scheduled",
            "schedule": {"cron": "0 * * * *", "historySeconds": HOUR, "maxRows": 100_000},
        },
    )
    boot = stream.take(3000)
    bootstrap(case.settings, boot.features(), boot.labels.astype(np.float32))
    now = time.time()
    old = produce_at(case, stream.take(1500), np.full(1500, now - 2 * HOUR))  # outside
    inside = produce_at(case, stream.take(3000), now - HOUR / 2 + np.arange(3000) * 0.1)
    topic = case.topics.labeled

    result = retrain(case.settings, now=now)
    assert result.version is not None, result.reason
    assert result.rows == 3000
    assert result.offsets == ranges(inside, topic)
    assert not any((p, o) in inside for p, o in old)
    versions = ModelVersions(case.settings.connections.mlflow_tracking_uri, case.name)
    candidate = versions.by_alias(artifacts.ALIAS_CANDIDATE)
    assert candidate is not None and candidate.version == result.version
    tags = candidate.tags
    assert json.loads(tags[artifacts.TAG_OFFSETS]) == ranges(inside, topic)
    assert tags[TAG_ROWS] == "3000" and tags[TAG_TRAINING] == "scheduled"
    assert tags[artifacts.TAG_PARENT_VERSION] == "1"
    gate = json.loads(tags[artifacts.TAG_GATE])
    assert gate["publish"] is True
    ends = json.loads(tags[TAG_HISTORY_ENDS])
    assert sum(ends.values()) == 4500  # every record of both partitions was there at the start

    # Nothing new on the topic: the command says so and registers nothing.
    again = retrain(case.settings, now=now + 60)
    assert again.version is None and "no new rows" in again.reason
    assert main(["--model-file", str(case.model_file), "retrain"]) == 0
    assert versions.by_alias(artifacts.ALIAS_CANDIDATE).version == result.version
    assert len(versions.model.find_versions({TAG_TRAINING: "scheduled"})) == 1


def test_the_history_keeps_the_newest_rows_under_its_cap(
    trainer_case: Callable[..., Any],
) -> None:
    stream = CovariateShiftStream(seed=6)
    case = trainer_case(stream)
    now = time.time()
    stamps = now - 600 + np.arange(3000) * 0.1
    produce_at(case, stream.take(3000), stamps)
    layout_model = case.settings.model
    from driftline.common.features import FeatureLayout

    layout = FeatureLayout.from_features(layout_model.spec.features)
    decoder = LabeledDecoder(
        layout,
        CategoricalEncoder(layout.categorical),
        case.name,
        "classification",
        2,
        DeadLetters(None, None),
    )
    history = read_history(
        case.conn, case.topics.labeled, decoder, now - 3600, 1000, f"{case.name}-h", batch=256
    )
    assert len(history.examples) == 1000 and history.dropped == 2000 and history.read == 3000
    assert history.examples.ts.min() >= np.sort(stamps)[-1000] - 1e-3
    assert len(np.unique(history.examples.key)) == 1000


def test_with_strategy_adapter_a_retrain_learns_a_fresh_adapter_on_the_baseline(
    trainer_case: Callable[..., Any],
) -> None:
    stream = SEAStream(seed=6, schedule=[(0, 0), (2000, 3)])  # the labelling rule changes
    case = trainer_case(
        stream,
        training={
            "mode": "scheduled",
            "schedule": {"cron": "0 * * * *", "historySeconds": HOUR, "maxRows": 100_000},
        },
        model={"strategy": "adapter"},
    )
    boot = stream.take(2000)
    bootstrap(case.settings, boot.features(), boot.labels.astype(np.float32))  # the baseline
    now = time.time()
    produce_at(case, stream.take(3000), now - HOUR / 2 + np.arange(3000) * 0.1)

    result = retrain(case.settings, now=now)
    assert result.version is not None, result.reason
    versions = ModelVersions(case.settings.connections.mlflow_tracking_uri, case.name)
    candidate = versions.by_alias(artifacts.ALIAS_CANDIDATE)
    assert candidate is not None and candidate.version == result.version
    assert candidate.tags["driftline.learner"] == "adapter"
    assert candidate.tags[TAG_ADAPTER_BASE] == "1"
