"""Confidence-based performance estimation: each confidence maps to its bin's accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.common.redis_state import Calibration, calibration_fields
from driftline.drift.estimate import estimated_accuracy


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
