"""Online Fisher's exact test on a binary stream: has the error rate gone up?

The serving model's per-example error (prediction != label) is a Bernoulli stream.
A concept change (a new labeling rule) raises its rate while the inputs stay the
same. For each sliding window of the last `w` errors we test, with Fisher's exact
test, whether the window holds more errors than the reference sample would suggest;
the statistic is 1 - p-value, smoothed with an exponential moving average
(`lam`, weight of the newest value) and maximised over the windows: short windows
react fast to a strong change, long ones see a weak one. This is the statistic of
alibi-detect's `FETDriftOnline` (after Ross et al. 2012).

The p-value only depends on the count of errors in the window, so all of them are
computed once into a table per window: a step costs a few array lookups, and the
threshold simulation (`calibrate`) runs over millions of simulated steps in about
a second.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.signal import lfilter
from scipy.stats import hypergeom

from driftline.drift.detectors.base import BoolArray, FloatArray, OnlineDetector, OnlineStep
from driftline.drift.detectors.cache import ThresholdCache, cache_key
from driftline.drift.detectors.calibrate import level_for_run_length

SIMULATED_ALARMS = 50
"""Simulate about this many false alarms to place the threshold."""
MAX_SIMULATED_STEPS = 4_000_000
SIMULATED_STREAMS = 16


class FETOnline(OnlineDetector):
    """Online FET over several window sizes, with a threshold for the wanted ERT."""

    def __init__(
        self,
        reference: BoolArray,
        ert: int,
        window_sizes: list[int],
        *,
        lam: float = 0.99,
        cache: ThresholdCache | None = None,
        seed: int = 0,
    ) -> None:
        self.name = "scipy:FETOnline"
        ref = np.asarray(reference, dtype=bool).ravel()
        if ref.size < 2:
            raise ValueError("the error reference needs at least 2 samples")
        self.windows = sorted({int(w) for w in window_sizes})
        self.max_ws = self.windows[-1]
        self.n, self.errors = int(ref.size), int(ref.sum())
        self.ert, self.lam = int(ert), float(lam)
        # stat_table[k][c] = 1 - P(FET p-value) for c errors in window k.
        self.tables = [_fet_table(self.n, self.errors, w) for w in self.windows]
        started = time.perf_counter()
        key = cache_key(
            n=self.n,
            errors=self.errors,
            windows=self.windows,
            ert=self.ert,
            lam=self.lam,
            alarms=SIMULATED_ALARMS,
            streams=SIMULATED_STREAMS,
        )
        cached = cache.get("fet", key) if cache else None
        if cached is not None:
            self.threshold = float(cached["threshold"])
        else:
            self.threshold = self._calibrate(np.random.default_rng(seed))
            if cache:
                cache.put("fet", key, {"threshold": np.array(self.threshold)})
        self.setup_seconds = time.perf_counter() - started
        self.reset()

    def reset(self) -> None:
        self.t = 0
        self._bits = np.zeros(self.max_ws, dtype=np.int8)
        self._counts = [0] * len(self.windows)
        self._ema = [np.nan] * len(self.windows)

    def update(self, x: FloatArray) -> OnlineStep:
        bit = int(np.asarray(x).ravel()[0] > 0.5)
        pos = self.t % self.max_ws
        self.t += 1
        best = np.nan
        for k, w in enumerate(self.windows):
            # The bit leaving window k sits w steps back in the ring buffer.
            leaving = int(self._bits[(pos - w) % self.max_ws]) if self.t > w else 0
            self._counts[k] += bit - leaving
            if self.t >= w:
                stat = float(self.tables[k][self._counts[k]])
                prev = self._ema[k]
                ema = stat if np.isnan(prev) else (1 - self.lam) * prev + self.lam * stat
                self._ema[k] = ema
                best = ema if np.isnan(best) else max(best, ema)
        self._bits[pos] = bit
        drift = bool(best > self.threshold)  # NaN (no window full yet) compares False
        return OnlineStep(drift=drift, statistic=float(best), threshold=self.threshold)

    def _calibrate(self, rng: np.random.Generator) -> float:
        """Simulate error streams without drift; place the threshold for the ERT.

        The reference is a sample too: its error count may fall below the true rate by
        chance, and the test then alarms more often than the ERT promises. So each
        simulated stream draws its own reference count around the observed one, and
        the threshold holds on average over references, not only for the lucky one.
        """
        # Half a count away from 0 and 1: a reference without errors must not make
        # the first error an alarm.
        rate = (self.errors + 0.5) / (self.n + 1)
        streams = SIMULATED_STREAMS
        steps = (
            int(
                min(
                    max(SIMULATED_ALARMS * self.ert, 20 * self.max_ws * streams),
                    MAX_SIMULATED_STEPS,
                )
            )
            // streams
        )
        stats = np.full((len(self.windows), streams, steps), np.nan, dtype=np.float32)
        for s in range(streams):
            ref_errors = int(rng.binomial(self.n, rate))
            csum = np.concatenate([[0], np.cumsum(rng.random(steps) < rate)])
            for k, w in enumerate(self.windows):
                counts = csum[w:] - csum[:-w]  # errors in the window ending at each step
                table = _fet_table(self.n, ref_errors, w)
                stats[k, s, w - 1 :] = _ema(table[counts], self.lam)
        return level_for_run_length(stats, self.windows, self.ert)


def _fet_table(n: int, errors: int, w: int) -> FloatArray:
    """1 - p-value of the one-sided FET for c = 0..w errors in a window of w samples."""
    counts = np.arange(w + 1)
    # P(the reference holds at most `errors` of all errors | margins): small when the
    # window holds more errors than its share.
    p = hypergeom.cdf(errors, n + w, errors + counts, n)
    return np.asarray(1.0 - p, dtype=np.float64)


def _ema(stats: FloatArray, lam: float) -> FloatArray:
    """Exponential moving average y_t = (1 - lam) y_{t-1} + lam x_t, starting at y_0 = x_0."""
    out, _ = lfilter([lam], [1.0, -(1 - lam)], stats, zi=np.array([(1 - lam) * stats[0]]))
    return np.asarray(out)
