"""The shared Bernoulli CUSUM: per-alternative thresholds, false alarms, change point."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.common.bernoulli_cusum import (
    ODDS_RATIOS,
    BernoulliCUSUM,
    increments,
    level_for_run_length,
    rate,
    rise_start,
    statistic,
    sums,
    thresholds_for_run_length,
)


def run_lengths(cusum: BernoulliCUSUM, errors: np.ndarray) -> list[int]:
    """Samples between alarms (the detector reset after each, as the monitor does)."""
    out, since = [], 0
    for e in errors:
        since += 1
        if cusum.update(bool(e)) > 1.0:
            out.append(since)
            since = 0
            cusum.reset()
    return out


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_on_a_stationary_stream_false_alarms_stay_within_the_budget(p: float) -> None:
    """About one alarm per ERT over ten references: a fixed seed, bounds of +-50 %.

    The thresholds hold on average over references (a reference that came out low
    alarms more often, one that came out high less), so the test draws ten. 100 alarms
    are expected; the bounds are five Poisson standard deviations wide, and a threshold
    placed for half or twice the ERT fails them.
    """
    ert, samples, alarms = 1000, 0, 0
    for rng in map(np.random.default_rng, np.random.SeedSequence(1).spawn(10)):
        ref = rng.random(2000) < p
        h = thresholds_for_run_length(ref.size, int(ref.sum()), ert, rng)
        cusum = BernoulliCUSUM(ref.size, int(ref.sum()), h)
        alarms += len(run_lengths(cusum, rng.random(10_000) < p))
        samples += 10_000
    assert 0.5 * samples / ert < alarms < 1.5 * samples / ert, (alarms, samples / ert)


def test_smaller_rises_get_lower_thresholds() -> None:
    """A sum for a small rise takes small steps: at an equal share its threshold is lower."""
    rng = np.random.default_rng(3)
    h = thresholds_for_run_length(2000, 300, 5000, rng)
    assert len(h) == len(ODDS_RATIOS)
    assert (np.diff(h) > 0).all(), h


def one_level(n: int, errors: int, ert: int, rng: np.random.Generator) -> float:
    """One threshold for all sums, for the same ERT: their maximum's level, simulated."""
    peaks = []
    for _ in range(100):
        bits = rng.random(2 * ert) < rate(errors, n)
        inc = increments(bits, int(rng.binomial(n, rate(errors, n))), n, 10 * n, ODDS_RATIOS)
        peaks.append(np.maximum.accumulate(sums(inc).max(axis=0)))
    return level_for_run_length(np.array(peaks, dtype=np.float32), ert)


def test_a_small_rise_is_seen_sooner_than_under_one_common_level() -> None:
    """Equal shares of the false-alarm budget against one level for all, at the same ERT."""
    rng = np.random.default_rng(8)
    n, errors, p0, p1, ert = 2000, 260, 0.13, 0.165, 10_000
    shares = thresholds_for_run_length(n, errors, ert, rng)
    common = np.full_like(shares, one_level(n, errors, ert, rng))
    assert shares.min() < common[0] < shares.max()
    delays: dict[str, list[int]] = {"shares": [], "common": []}
    for _ in range(40):
        stream = np.concatenate([rng.random(3000) < p0, rng.random(6000) < p1])
        inc = increments(stream, errors, n, 10 * n, ODDS_RATIOS)
        for name, levels in (("shares", shares), ("common", common)):
            after = np.flatnonzero(statistic(inc, levels)[3000:] > 1.0)
            delays[name].append(int(after[0]) if after.size else 6000)
    assert np.mean(delays["shares"]) < 0.8 * np.mean(delays["common"]), delays


def test_the_rise_starts_after_the_lowest_point_of_the_walk() -> None:
    rng = np.random.default_rng(5)
    errors = np.concatenate([rng.random(3000) < 0.1, rng.random(1000) < 0.4])
    start = rise_start(errors, 0.25)
    assert abs(start - 3000) < 50
    walk = np.cumsum(errors - 0.25)
    assert start == int(np.argmin(walk)) + 1
    # Nothing after the lowest point: the last row, never past the end.
    assert rise_start(np.zeros(10, bool), 0.5) == 9


def test_the_live_sums_are_the_simulated_ones() -> None:
    rng = np.random.default_rng(6)
    h = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    cusum = BernoulliCUSUM(500, 90, h, learn=800)
    bits = rng.random(2000) < 0.2
    seen = [cusum.update(bool(b)) for b in bits]
    assert np.allclose(seen, statistic(increments(bits, 90, 500, 800, ODDS_RATIOS), h))


def test_one_threshold_per_alternative_and_ratios_above_one() -> None:
    with pytest.raises(ValueError, match="one threshold per odds ratio"):
        BernoulliCUSUM(100, 10, np.ones(2))
    with pytest.raises(ValueError, match="above 1"):
        BernoulliCUSUM(100, 10, np.ones(2), odds_ratios=(0.9, 1.2))
