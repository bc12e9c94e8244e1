"""Confidence bins and the expected calibration error summed from them."""

from __future__ import annotations

import random

import pytest

from driftline.common.redis_state import (
    CALIBRATION_BINS,
    Calibration,
    calibration_fields,
    quality_fields,
)


def _sums(rows: list[tuple[float, bool]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for confidence, correct in rows:
        for name, value in calibration_fields(confidence, correct).items():
            out[name] = out.get(name, 0.0) + value
    return out


def test_each_confidence_falls_in_one_bin_and_one_is_the_top_bin() -> None:
    assert calibration_fields(0.0, True) == {"cal0_n": 1.0, "cal0_conf": 0.0, "cal0_correct": 1.0}
    assert set(calibration_fields(0.95, False)) == {"cal9_n", "cal9_conf", "cal9_correct"}
    assert "cal9_n" in calibration_fields(1.0, True)  # 1.0 is in the last bin
    assert "cal5_n" in calibration_fields(0.5, True)
    assert "cal0_n" in calibration_fields(-0.2, True)  # out of range is clamped


def test_a_calibrated_model_has_a_small_error_an_overconfident_one_a_large() -> None:
    rng = random.Random(3)
    calibrated = []
    for _ in range(20_000):
        c = rng.uniform(0.5, 1.0)
        calibrated.append((c, rng.random() < c))
    measured = Calibration.from_fields(_sums(calibrated))
    assert measured is not None and measured.count == 20_000
    assert measured.error < 0.02
    assert measured.confidence == pytest.approx(measured.accuracy, abs=0.02)

    # Always 95 % sure, right 60 % of the time.
    overconfident = [(0.95, rng.random() < 0.6) for _ in range(5_000)]
    measured = Calibration.from_fields(_sums(overconfident))
    assert measured is not None
    assert measured.error == pytest.approx(0.35, abs=0.02)
    assert measured.confidence - measured.accuracy == pytest.approx(0.35, abs=0.02)
    assert len(measured.bins) == CALIBRATION_BINS and measured.bins[9][0] == 5_000


def test_no_labeled_scores_no_calibration() -> None:
    assert Calibration.from_fields({"count": 10.0, "correct": 7.0}) is None


def test_a_scored_classification_counts_the_answered_class_s_confidence() -> None:
    fields = quality_fields("classification", 1.0, 0.0, [0.3, 0.7])
    assert fields["cal7_n"] == 1.0 and fields["cal7_conf"] == pytest.approx(0.7)
    assert fields["cal7_correct"] == 0.0
    assert not any(name.startswith("cal") for name in quality_fields("classification", 1, 1, None))
    assert not any(name.startswith("cal") for name in quality_fields("regression", 1.0, 2.0, None))
