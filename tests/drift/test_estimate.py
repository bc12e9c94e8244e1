"""Confidence-based performance estimation: each confidence maps to its bin's accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.api.events import Prediction
from driftline.common.redis_state import (
    AccuracyEstimate,
    Calibration,
    EstimateStore,
    QualityStore,
    calibration_fields,
)
from driftline.drift.estimate import PerformanceEstimator, estimated_accuracy


def _calibration(rows: list[tuple[float, bool]]) -> Calibration | None:
    sums: dict[str, float] = {}
    for confidence, correct in rows:
        for name, value in calibration_fields(confidence, correct).items():
            sums[name] = sums.get(name, 0.0) + value
    return Calibration.from_fields(sums)


def test_without_labels_the_confidence_is_taken_at_its_word() -> None:
    assert estimated_accuracy([0.9, 0.7], None, 30) == pytest.approx(0.8)
    assert estimated_accuracy([], None, 30) is None


def test_a_bin_with_enough_labels_gives_its_observed_accuracy() -> None:
    overconfident = _calibration([(0.92, i % 2 == 0) for i in range(40)])  # 50 % at 0.9x
    assert estimated_accuracy([0.95, 0.95], overconfident, 30) == pytest.approx(0.5)
    # A bin with too few labels keeps the confidence; others are unaffected.
    assert estimated_accuracy([0.95, 0.65], overconfident, 30) == pytest.approx((0.5 + 0.65) / 2)
    assert estimated_accuracy([0.95], overconfident, 41) == pytest.approx(0.95)


def test_a_shift_towards_unsure_regions_lowers_the_estimate_before_any_label() -> None:
    calibrated = _calibration(
        [(0.95, i % 20 != 0) for i in range(200)] + [(0.55, i % 20 < 11) for i in range(200)]
    )
    before = estimated_accuracy([0.95] * 90 + [0.55] * 10, calibrated, 30)
    after = estimated_accuracy([0.95] * 30 + [0.55] * 70, calibrated, 30)
    assert before is not None and after is not None
    assert before - after > 0.2


def _world(rng: np.random.Generator, n: int, spread: float, flip: bool = False) -> tuple:
    """A calibrated model of a logistic world: x ~ N(0, spread), P(y=1|x) = sigmoid(3x);
    the model answers with exactly that probability. `flip`: the concept turns over."""
    x = rng.normal(0.0, spread, n)
    p1 = 1.0 / (1.0 + np.exp(-3.0 * x))
    y = (rng.random(n) < (1 - p1 if flip else p1)).astype(int)
    answered = (p1 >= 0.5).astype(int)
    confidence = np.where(answered == 1, p1, 1 - p1)
    return confidence, answered == y


def _labeled_bins(confidence: np.ndarray, correct: np.ndarray) -> Calibration | None:
    return _calibration(list(zip(confidence.tolist(), correct.tolist(), strict=True)))


def test_under_a_covariate_shift_the_estimate_tracks_the_labeled_accuracy() -> None:
    """Inputs move towards the boundary (the model grows unsure), the rule stays: the
    estimate, calibrated on the labels before the shift, is within 3 points of the
    accuracy the labels later show."""
    rng = np.random.default_rng(7)
    calibration = _labeled_bins(*_world(rng, 20_000, spread=2.0))
    for spread in (2.0, 0.8, 0.3):
        confidence, correct = _world(rng, 5_000, spread=spread)
        estimate = estimated_accuracy(confidence.tolist(), calibration, 30)
        assert estimate is not None
        assert abs(estimate - correct.mean()) < 0.03, (spread, estimate, correct.mean())


def test_under_a_concept_change_the_estimate_cannot_see_it() -> None:
    """The rule turns over while the inputs stay: accuracy collapses, confidence does
    not move, and neither does the estimate (the docs say so; the concept detector and
    the calibration alarm see it once labels come)."""
    rng = np.random.default_rng(8)
    calibration = _labeled_bins(*_world(rng, 20_000, spread=2.0))
    confidence, correct = _world(rng, 5_000, spread=2.0, flip=True)
    estimate = estimated_accuracy(confidence.tolist(), calibration, 30)
    assert estimate is not None and estimate > 0.8 and correct.mean() < 0.2


class _Hashes:
    """The few Redis hash commands the estimator and the rollout use, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.data.get(key, {}))

    def hset(self, key: str, field: str, value: str) -> None:
        self.data.setdefault(key, {})[field] = value

    def hdel(self, key: str, field: str) -> None:
        self.data.get(key, {}).pop(field, None)

    def pipeline(self, transaction: bool = False) -> _Pipe:
        return _Pipe(self)


class _Pipe:
    def __init__(self, hashes: _Hashes) -> None:
        self.hashes = hashes
        self.keys: list[str] = []

    def hgetall(self, key: str) -> None:
        self.keys.append(key)

    def execute(self) -> list[dict[str, str]]:
        return [self.hashes.hgetall(k) for k in self.keys]


def _prediction(version: str, variant: str, confidence: float) -> Prediction:
    return Prediction(
        request_id=f"{version}-{variant}-{confidence}",
        model="m",
        model_version=version,
        variant=variant,
        output=0,
        scores=[confidence, 1 - confidence],
        features={},
        ts=0.0,
    )


def test_the_estimate_of_each_version_is_written_where_the_rollout_reads_it() -> None:
    client, store = _Hashes(), EstimateStore("ns", "m")
    estimator = PerformanceEstimator(
        "m", QualityStore("ns", "m"), window=10, calibration_window_seconds=60, store=store
    )
    estimator.observe(
        [_prediction("1", "stable", 0.9)] * 3
        + [_prediction("2", "shadow", 0.6)] * 2  # a shadow candidate is estimated too
        + [_prediction("3", "baseline", 0.9)]  # answers nobody was served: not
    )
    estimator.refresh(client, {"1", "2", "3"}, now=5000.0)
    seen = store.read(client)
    assert set(seen) == {"1", "2"}
    assert seen["1"] == AccuracyEstimate(accuracy=pytest.approx(0.9), rows=3, at=5000.0)
    assert seen["2"].accuracy == pytest.approx(0.6) and seen["2"].rows == 2
    estimator.refresh(client, {"1"}, now=5010.0)  # version 2 no longer serves
    assert set(store.read(client)) == {"1"}
    client.hset(store.key, "9", "not json")
    assert set(store.read(client)) == {"1"}  # an unreadable entry is left out
