"""Bernoulli CUSUMs on a binary error stream: has the error rate gone up, and since when?

One home for the CUSUM that both the drift monitor (its `cusum` concept detector) and
the trainer (where a rise of its stable version's errors began) use.

For an alternative error rate p1 > p0 (p0 from a reference sample), each error adds
log(p1 / p0) to a cumulative sum and each correct answer adds log((1 - p1) / (1 - p0))
(negative); the sum is kept at or above 0 (Page's CUSUM, the log-likelihood ratio of
"the rate moved to p1 some time ago" against "it is still p0"). Evidence of a small
rise builds up sample by sample, where a fixed window has to fill first. One sum runs
per alternative (a grid of odds ratios, from a rise of a seventh to a fourfold one),
so that a rise of any size in that range meets a sum tuned near it. A step costs a
few float operations.

Each alternative has its own threshold, and each gets the same share of the
false-alarm budget (the same run length on its own). One threshold in nats for all of
them would hold the small alternatives to the large ones' level: a sum for a small
rise takes small steps and wanders near 0 for long stretches, so it reaches a given
level far more rarely than a sum for a large rise, and it needs a much lower one to
alarm as often. Held to the common level, a rise from 13 % to 16.5 % took 1.7x as long
to be seen at the same ERT (mean over synthetic streams, `test_bernoulli_cusum.py`).
The detector alarms when any sum passes its threshold; its statistic is the largest
sum as a share of its threshold (alarm above 1).

p0 is the reference's error rate at first; every sample watched since the last reset
then joins the estimate (up to `learn` samples in all, then it stays), as River's
Page-Hinkley learns its mean: a rise of a few percent is only a few standard errors of
a reference of a thousand examples, and a sharper p0 lets the small alternatives work
without false alarms from a reference that came out low. After an alarm the detector
starts afresh from the reference alone.

The thresholds come from simulating many streams at p0 in parallel, vectorised over
time: a CUSUM is S_t = C_t - min(0, min_{s<=t} C_s) for the cumulative sum C of its
increments. A fresh sum's run length for a threshold h is the first step at which its
running maximum passes h, so one simulated stream gives its run length for every h at
once; the mean run length (streams that never alarm count as censored, the
exponential estimate: watched steps / alarms) is bisected to the wanted one. Each
alternative's threshold is first placed for K x the ERT on its own (K alternatives),
then all are scaled by one factor, bisected the same way on the largest share, so the
detector as a whole runs the ERT asked for. For run lengths longer than the simulation
can show, the count of streams alarming above a level is extrapolated from its tail,
where its logarithm is linear in the level (P(alarm) ~ exp(-h) for a likelihood-ratio
CUSUM).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ODDS_RATIOS = (1.15, 1.3, 1.6, 2.5, 4.0)
"""The alternatives: the error odds times these (p0 0.15 -> 0.17, 0.19, 0.22, 0.31, 0.41)."""
LEARN = 10
"""The rate estimate takes up to this many reference sizes of samples in all."""
SIMULATED_ALARMS = 100
"""Simulate about this many ERTs of samples (within the bounds below)."""
MIN_SIMULATED_STEPS = 1_000_000
MAX_SIMULATED_STEPS = 4_000_000
STREAM_LENGTH = (2000, 20_000)
"""Each simulated stream runs about two ERTs, within these bounds; each draws its own
reference (see `thresholds_for_run_length`)."""
MIN_ALARMS = 20
"""Fewer simulated streams than this alarming at the wanted run length: extrapolate."""
BISECTIONS = 30


class BernoulliCUSUM:
    """Page CUSUMs for several rises of an error rate, each with its own threshold.

    `n` and `errors` describe the reference sample; `thresholds` (one per odds ratio)
    come from `thresholds_for_run_length` for the same reference and ratios.
    """

    def __init__(
        self,
        n: int,
        errors: int,
        thresholds: FloatArray,
        *,
        odds_ratios: tuple[float, ...] = ODDS_RATIOS,
        learn: int | None = None,
    ) -> None:
        self.n, self.errors = int(n), int(errors)
        self.odds_ratios = check_odds_ratios(odds_ratios)
        self.thresholds = [float(h) for h in thresholds]
        if len(self.thresholds) != len(self.odds_ratios):
            raise ValueError("one threshold per odds ratio")
        self.learn = LEARN * self.n if learn is None else int(learn)
        self._log_odds = [math.log(r) for r in self.odds_ratios]
        self.reset()

    def reset(self) -> None:
        self.sums = [0.0] * len(self.odds_ratios)
        self._seen, self._errors = self.n, self.errors
        # Each CUSUM's increments (on an error, on a correct answer) once the reference
        # rate has stopped learning: from then on they are the same for every sample.
        self._fixed: list[tuple[float, float]] | None = None

    @property
    def rate(self) -> float:
        """The reference error rate as the detector estimates it now."""
        return rate(self._errors, self._seen)

    def _increments(self) -> list[tuple[float, float]]:
        """Each CUSUM's (on error, on success) increment at the reference rate so far."""
        odds = (self._errors + 0.5) / (self._seen - self._errors + 0.5)
        out = []
        for r, log_r in zip(self.odds_ratios, self._log_odds, strict=True):
            down = math.log1p(odds) - math.log1p(odds * r)  # log((1 - p1) / (1 - p0))
            out.append((log_r + down, down))
        return out

    def update(self, error: bool) -> float:
        """Add one sample; the largest sum as a share of its threshold (drift above 1)."""
        steps = self._fixed if self._fixed is not None else self._increments()  # before it
        sums = [
            max(0.0, s + (up if error else down))
            for s, (up, down) in zip(self.sums, steps, strict=True)
        ]
        self.sums = sums
        if self._seen < self.learn:
            self._seen += 1
            self._errors += error
        elif self._fixed is None:
            self._fixed = steps
        return max(s / h for s, h in zip(sums, self.thresholds, strict=True))


def check_odds_ratios(odds_ratios: tuple[float, ...]) -> tuple[float, ...]:
    out = tuple(sorted(float(r) for r in odds_ratios))
    if not out or out[0] <= 1:
        raise ValueError("the CUSUM's odds ratios must all be above 1")
    return out


def rate(errors: int, n: int) -> float:
    """Half a count away from 0 and 1: a reference without errors still has a rate."""
    return (errors + 0.5) / (n + 1)


def increments(
    bits: BoolArray, errors: int, n: int, learn: int, odds_ratios: tuple[float, ...]
) -> FloatArray:
    """Each CUSUM's increment at each step (rows: alternatives), as `update` adds them.

    Before step t the rate estimate holds the reference (`errors` of `n`) and the
    samples before t, up to `learn` samples in all.
    """
    learned = np.minimum(np.arange(bits.size), max(learn - n, 0))
    errs = errors + np.concatenate([[0], np.cumsum(bits, dtype=np.int64)])[learned]
    seen = n + learned
    odds = (errs + 0.5) / (seen - errs + 0.5)
    ratios = np.asarray(odds_ratios, dtype=np.float64)[:, None]
    down = np.log1p(odds) - np.log1p(odds * ratios)
    return np.asarray(np.where(bits, np.log(ratios) + down, down), dtype=np.float64)


def sums(increments: FloatArray) -> FloatArray:
    """Each CUSUM after each step of a fresh detector (rows: alternatives)."""
    c = np.cumsum(increments, axis=1)
    return np.asarray(c - np.minimum(np.minimum.accumulate(c, axis=1), 0.0), dtype=np.float64)


def statistic(increments: FloatArray, thresholds: FloatArray) -> FloatArray:
    """The detector's statistic after each step: the largest sum's share of its threshold."""
    h = np.asarray(thresholds, dtype=np.float64)[:, None]
    return np.asarray((sums(increments) / h).max(axis=0), dtype=np.float64)


def rise_start(errors: BoolArray, reference_value: float) -> int:
    """Where a rise of the error rate began: the CUSUM's change-point estimate.

    The walk sum(error - k), k between the old and the new rate, falls while the rate
    is below k and climbs once it is above: the rise began just after its lowest point
    (where the Page CUSUM on these increments last left 0). An index into `errors`.
    """
    walk = np.cumsum(np.asarray(errors, dtype=np.float64) - reference_value)
    return min(int(np.argmin(walk)) + 1, len(walk) - 1)


def thresholds_for_run_length(
    n: int,
    errors: int,
    run_length: int,
    rng: np.random.Generator,
    *,
    odds_ratios: tuple[float, ...] = ODDS_RATIOS,
    learn: int | None = None,
) -> FloatArray:
    """Each alternative's threshold for a detector that alarms every `run_length` samples.

    The reference is a sample too: each simulated stream draws its own reference count
    around the observed one and runs its CUSUMs against that estimate, so the
    thresholds hold on average over references, not only for the lucky one.
    """
    odds_ratios = check_odds_ratios(odds_ratios)
    learn = LEARN * n if learn is None else learn
    p0 = rate(errors, n)
    total = int(np.clip(SIMULATED_ALARMS * run_length, MIN_SIMULATED_STEPS, MAX_SIMULATED_STEPS))
    steps = int(np.clip(2 * run_length, *STREAM_LENGTH))
    streams = max(1, total // steps)
    ref_errors = rng.binomial(n, p0, size=streams)
    k = len(odds_ratios)
    peaks = np.empty((k, streams, steps), dtype=np.float32)
    for s in range(streams):  # one stream at a time keeps the memory small
        bits = rng.random(steps) < p0
        inc = increments(bits, int(ref_errors[s]), n, learn, odds_ratios)
        peaks[:, s] = np.maximum.accumulate(sums(inc), axis=1)
    # An equal share each, then one factor for the detector as a whole.
    alone = np.array([level_for_run_length(peaks[i], k * run_length) for i in range(k)])
    shares = (peaks / alone[:, None, None].astype(np.float32)).max(axis=0)
    return np.asarray(alone * level_for_run_length(shares, run_length), dtype=np.float64)


def level_for_run_length(peaks: npt.NDArray[np.float32], run_length: float) -> float:
    """The lowest level at which fresh detectors run `run_length` steps on average.

    `peaks[s, t]` is the largest statistic of simulated stream `s` up to step `t`
    (non-decreasing along t). A stream's run length for level h is the first step
    with peak > h; a stream that never passes h is censored at its length.
    """
    streams, steps = peaks.shape
    top = np.sort(peaks[:, -1].astype(np.float64))[::-1]  # each stream's final peak

    def mean_run(level: float) -> float:
        hit = peaks[:, -1] > level
        if not hit.any():
            return np.inf
        first = np.array([np.searchsorted(row, level, side="right") for row in peaks[hit]])
        return float((first.sum() + hit.sum() + (streams - hit.sum()) * steps) / hit.sum())

    if mean_run(float(top[MIN_ALARMS])) < run_length:
        return _extrapolate(top, mean_run, run_length)
    lo, hi = float(peaks[:, 0].min()), float(top[MIN_ALARMS])
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        if mean_run(mid) >= run_length:
            hi = mid
        else:
            lo = mid
    return hi


def _extrapolate(top: FloatArray, mean_run: Callable[[float], float], run_length: float) -> float:
    """Beyond the simulated levels: log(mean run length) is about linear in the level."""
    ranks = np.unique(np.linspace(MIN_ALARMS // 2, top.size - MIN_ALARMS // 2, 8).astype(int))
    levels = top[ranks]
    slope, intercept = np.polyfit(levels, np.log([mean_run(float(h)) for h in levels]), 1)
    if slope <= 0:
        return float(top[0])
    return float((np.log(run_length) - intercept) / slope)
