"""Confidence-based performance estimation: each confidence maps to its bin's accuracy."""

from __future__ import annotations

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
