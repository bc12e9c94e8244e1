"""Bernoulli CUSUM on a binary error stream: has the error rate gone up?

The sequential counterpart of `FETOnline`. For an alternative error rate p1 > p0 (p0
from the reference sample), each error adds log(p1 / p0) to a cumulative sum and
each correct answer adds log((1 - p1) / (1 - p0)) (negative); the sum is kept at or
above 0 (Page's CUSUM, the log-likelihood ratio of "the rate moved to p1 some time
ago" against "it is still p0"). Evidence of a small rise builds up sample by sample,
where a fixed window has to fill first. One sum runs per alternative (a grid of
odds ratios, from a rise of a fifth to a fourfold one), all in the same unit
(nats of evidence), and the statistic is their maximum, as the FET's is the maximum
over its windows. A step costs a few float operations.

p0 is the reference's error rate at first; every sample watched since the last
reset then joins the estimate (up to `learn` samples in all, then it stays), as
River's Page-Hinkley learns its mean: a rise of a few percent is only a few
standard errors of a reference of a thousand examples, and a sharper p0 lets the
small alternatives work without false alarms from a reference that came out low.
After an alarm the detector starts afresh from the reference alone.

The threshold comes from simulating many streams at p0 in parallel, vectorised
over time: a CUSUM is S_t = C_t - min(0, min_{s<=t} C_s) for the cumulative sum C of
its increments. A fresh detector's run length for a threshold h is the first step
at which the running maximum of its statistic passes h, so one simulated stream
gives its run length for every h at once; the mean run length (streams that never
alarm count as censored, the exponential estimate: watched steps / alarms) is
bisected to the wanted ERT. For ERTs longer than the simulation can show, the count
of streams alarming above a level is extrapolated from its tail, where its
logarithm is linear in the level (P(alarm) ~ exp(-h) for a likelihood-ratio CUSUM).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from driftline.drift.detectors.base import BoolArray, FloatArray, OnlineDetector, OnlineStep
from driftline.drift.detectors.cache import ThresholdCache, cache_key

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
reference (see `CUSUMOnline._calibrate`)."""
MIN_ALARMS = 20
"""Fewer simulated streams than this alarming at the wanted ERT: extrapolate."""
BISECTIONS = 30


class CUSUMOnline(OnlineDetector):
    """Bernoulli CUSUMs for several rises of the error rate, one threshold for the ERT."""

    def __init__(
        self,
        reference: BoolArray,
        ert: int,
        *,
        odds_ratios: tuple[float, ...] = ODDS_RATIOS,
        cache: ThresholdCache | None = None,
        seed: int = 0,
    ) -> None:
        self.name = "scipy:CUSUMOnline"
        ref = np.asarray(reference, dtype=bool).ravel()
        if ref.size < 2:
            raise ValueError("the error reference needs at least 2 samples")
        self.n, self.errors = int(ref.size), int(ref.sum())
        self.ert = int(ert)
        self.odds_ratios = tuple(sorted(float(r) for r in odds_ratios))
        if not self.odds_ratios or self.odds_ratios[0] <= 1:
            raise ValueError("the CUSUM's odds ratios must all be above 1")
        self.p0 = _rate(self.errors, self.n)
        self.learn = LEARN * self.n
        self._log_odds = [float(np.log(r)) for r in self.odds_ratios]
        started = time.perf_counter()
        key = cache_key(
            n=self.n,
            errors=self.errors,
            ert=self.ert,
            odds=list(self.odds_ratios),
            learn=self.learn,
            alarms=SIMULATED_ALARMS,
            streams=STREAM_LENGTH,
        )
        cached = cache.get("cusum", key) if cache else None
        if cached is not None:
            self.threshold = float(cached["threshold"])
        else:
            self.threshold = self._calibrate(np.random.default_rng(seed))
            if cache:
                cache.put("cusum", key, {"threshold": np.array(self.threshold)})
        self.setup_seconds = time.perf_counter() - started
        self.reset()

    def reset(self) -> None:
        self._sums = [0.0] * len(self.odds_ratios)
        self._seen, self._errors = self.n, self.errors
        # Each CUSUM's increments (on an error, on a correct answer) once the reference
        # rate has stopped learning: from then on they are the same for every sample.
        self._fixed: list[tuple[float, float]] | None = None

    def _increments(self) -> list[tuple[float, float]]:
        """Each CUSUM's (on error, on success) increment at the reference rate so far."""
        odds = (self._errors + 0.5) / (self._seen - self._errors + 0.5)
        out = []
        for r, log_r in zip(self.odds_ratios, self._log_odds, strict=True):
            down = math.log1p(odds) - math.log1p(odds * r)  # log((1 - p1) / (1 - p0))
            out.append((log_r + down, down))
        return out

    def update(self, x: FloatArray) -> OnlineStep:
        error = float(np.asarray(x).ravel()[0]) > 0.5
        steps = self._fixed if self._fixed is not None else self._increments()  # before this sample
        sums = [
            max(0.0, s + (up if error else down))
            for s, (up, down) in zip(self._sums, steps, strict=True)
        ]
        self._sums = sums
        if self._seen < self.learn:
            self._seen += 1
            self._errors += error
        elif self._fixed is None:
            self._fixed = steps
        best = max(sums)
        return OnlineStep(drift=best > self.threshold, statistic=best, threshold=self.threshold)

    def _calibrate(self, rng: np.random.Generator) -> float:
        """Simulate error streams at the reference rate; place the threshold for the ERT.

        As for the FET, the reference is a sample too: each simulated stream draws its
        own reference count around the observed one and runs its CUSUMs against that
        estimate, so the threshold holds on average over references.
        """
        total = int(np.clip(SIMULATED_ALARMS * self.ert, MIN_SIMULATED_STEPS, MAX_SIMULATED_STEPS))
        steps = int(np.clip(2 * self.ert, *STREAM_LENGTH))
        streams = max(1, total // steps)
        ref_errors = rng.binomial(self.n, self.p0, size=streams)
        peaks = np.empty((streams, steps), dtype=np.float32)
        for s in range(streams):  # one stream at a time keeps the memory small
            bits = rng.random(steps) < self.p0
            inc = increments(bits, int(ref_errors[s]), self.n, self.learn, self.odds_ratios)
            peaks[s] = np.maximum.accumulate(_statistic(inc))
        return level_for_run_length(peaks, self.ert)


def _rate(errors: int, n: int) -> float:
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


def _statistic(increments: FloatArray) -> FloatArray:
    """max_k S_k after each step of a fresh detector (rows of `increments`: alternatives)."""
    c = np.cumsum(increments, axis=1)
    sums = c - np.minimum(np.minimum.accumulate(c, axis=1), 0.0)
    return np.asarray(sums.max(axis=0), dtype=np.float64)


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
