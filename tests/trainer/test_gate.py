"""The gate publishes only what beats the serving version without forgetting."""

from __future__ import annotations

import json

import numpy as np

from driftline.trainer.gate import Scores, decide, quality


def gate(new: Scores, serving: Scores, anchor_rows: int = 500, version: str | None = "3"):  # type: ignore[no-untyped-def]
    return decide(
        new=new,
        serving=serving,
        holdout_rows=400,
        anchor_rows=anchor_rows,
        min_anchor_rows=100,
        max_regression=0.01,
        epoch=2,
        serving_version=version,
    )


def test_beats_and_keeps_the_anchor_set() -> None:
    d = gate(Scores(0.90, 0.95), Scores(0.85, 0.955))
    assert d.publish and d.kind == "beats"
    assert "version 3" in d.reason and "epoch 2" in d.reason
    assert json.loads(d.to_json())["new"]["holdout"] == 0.9


def test_a_tie_is_not_an_improvement() -> None:
    d = gate(Scores(0.90, 0.95), Scores(0.90, 0.95))
    assert not d.publish and d.kind == "no_improvement"


def test_forgetting_the_anchor_set_blocks() -> None:
    d = gate(Scores(0.95, 0.80), Scores(0.85, 0.90))
    assert not d.publish and d.kind == "anchor_regression"
    assert "maxRegression 0.01" in d.reason


def test_anchor_check_waits_for_a_filled_anchor_set() -> None:
    d = gate(Scores(0.95, 0.10), Scores(0.85, 0.90), anchor_rows=20)
    assert d.publish and "still filling" in d.reason


def test_without_a_serving_version_any_model_publishes() -> None:
    d = gate(Scores(0.6, 0.6), Scores(float("nan"), float("nan")), version=None)
    assert d.publish
    assert json.loads(d.to_json())["serving"]["holdout"] is None


def test_quality() -> None:
    labels = np.array([0, 1, 1, 0], np.float32)
    assert (
        quality(
            "classification",
            labels,
            np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [1, 0]], np.float32),
        )
        == 0.75
    )
    assert quality("regression", labels, labels) == 1.0
    assert quality("regression", labels, np.full(4, 0.5, np.float32)) == 0.0
