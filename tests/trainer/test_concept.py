"""The error-rate monitor finds a rise and where it began; the input check tells the kinds apart."""

from __future__ import annotations

import numpy as np

from driftline.trainer.concept import ErrorRateMonitor, rose_in_old_region, shifted_features


def feed(monitor: ErrorRateMonitor, errors: np.ndarray, batch: int = 256) -> int | None:
    """Row count at which the monitor alarms, or None."""
    for i in range(0, len(errors), batch):
        part = errors[i : i + batch]
        if monitor.update(part, np.arange(i, i + len(part))):
            return i + len(part)
    return None


def test_no_alarm_on_a_steady_error_rate() -> None:
    rng = np.random.default_rng(0)
    for rate in (0.02, 0.1, 0.3):
        assert feed(ErrorRateMonitor(), rng.random(100_000) < rate) is None, rate


def test_a_jump_in_errors_is_found_soon_with_its_start() -> None:
    rng = np.random.default_rng(1)
    monitor = ErrorRateMonitor()
    errors = np.concatenate([rng.random(20_000) < 0.05, rng.random(5_000) < 0.4])
    at = feed(monitor, errors)
    assert at is not None and 20_000 < at < 20_600
    assert monitor.change_start is not None and abs(monitor.change_start - 20_000) < 100
    before, now = monitor.last_rates
    assert before < 0.07 and now > 0.1


def test_batch_size_does_not_change_the_verdict() -> None:
    rng = np.random.default_rng(2)
    errors = np.concatenate([rng.random(10_000) < 0.1, rng.random(3_000) < 0.5])
    for batch in (1000, 64, 7):
        at = feed(ErrorRateMonitor(), errors, batch)
        assert at is not None and 10_000 < at < 11_200, batch


def test_state_round_trip() -> None:
    rng = np.random.default_rng(4)
    errors = np.concatenate([rng.random(3_000) < 0.1, rng.random(2_000) < 0.6])
    a, b = ErrorRateMonitor(), ErrorRateMonitor()
    a.update(errors[:2_900], np.arange(2_900))
    b.load_state(a.state())
    tail = errors[2_900:], np.arange(2_900, 5_000)
    assert a.update(*tail) == b.update(*tail) is True
    assert a.change_start == b.change_start


def test_shifted_features_names_what_moved() -> None:
    rng = np.random.default_rng(3)
    old = rng.normal(size=(1000, 2)).astype(np.float32)
    new = old.copy() + np.array([0.0, 1.0], np.float32)
    codes_old = rng.integers(0, 4, (1000, 1))
    codes_new = rng.integers(2, 6, (500, 1))
    assert shifted_features(new, old, ("a", "b"), codes_new, codes_old, ("seg",)) == ["b", "seg"]
    same = rng.normal(size=(800, 2)).astype(np.float32)
    assert shifted_features(same, old, ("a", "b"), codes_old[:800], codes_old, ("seg",)) == []


def test_a_few_rows_in_the_old_region_decide_when_they_say_it_loudly() -> None:
    # Inputs moved and only 25 rows stayed where the old ones were, every one wrong
    # against a rate of 0.18 before: the rule changed.
    assert rose_in_old_region(np.ones(25, np.bool_), 0.18, 0.05, 5.0)
    # As many rows at the rate of before, or a handful wrong: not enough to say so.
    rng = np.random.default_rng(3)
    assert not rose_in_old_region(rng.random(25) < 0.18, 0.18, 0.05, 5.0)
    assert not rose_in_old_region(np.ones(5, np.bool_), 0.18, 0.05, 5.0)
    assert not rose_in_old_region(np.zeros(0, np.bool_), 0.18, 0.05, 5.0)
    # One wrong row, or a few, after a model that made no errors: never enough.
    for n in (1, 2, 3):
        assert not rose_in_old_region(np.ones(n, np.bool_), 0.0, 0.05, 5.0)
    # Many rows with a small rise (below `min_increase`): no.
    assert not rose_in_old_region(np.arange(10_000) % 100 < 21, 0.18, 0.05, 5.0)
