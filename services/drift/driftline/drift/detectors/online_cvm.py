"""Online Cramer-von Mises test per feature: has a continuous stream changed?

For each feature and each sliding window of the last `w` values, the two-sample
Cramer-von Mises statistic against the reference sample, standardised by its mean
and variance under no drift (Anderson 1962), as alibi-detect's `CVMDriftOnline`
does. The statistic is rank based, so its distribution without drift does not
depend on the data: thresholds depend only on (reference size, windows, ERT,
number of features) and are cached per configuration.

Anderson's rank form makes a step cheap. With `b` the number of reference values
below a window value and `C_i` the number of window values below the i-th smallest
reference value,

    U = n * sum_i C_i^2 + m * sum_j b_j^2,   T = U / (n m (n + m)) - (4 n m - 1) / (6 (n + m)).

Adding a value with rank `b` raises every `C_i` with `i > b` by one, which changes
sum_i C_i^2 by 2 * sum_j (n - max(b, b_j)) + (n - b) over the other window values:
O(w) per step instead of O(n + w). The same vectorised update drives the threshold
simulation, with one simulated stream per column.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from driftline.drift.detectors.base import FloatArray, OnlineDetector, OnlineStep
from driftline.drift.detectors.cache import ThresholdCache, cache_key
from driftline.drift.detectors.calibrate import level_for_run_length

SIMULATED_ALARMS = 200
"""Alarms the threshold simulation sees at the ERT. With 50, thresholds for the same
reference drawn with different seeds gave run lengths from 0.8 to 1.5 x ERT (10
features, window 20, ERT 500); with 200, 0.8 to 1.0 x ERT, for a set-up of 0.6 s."""
SIMULATED_STREAMS = 256
MAX_SIMULATED_STEPS = 6_000_000
"""Feature-steps simulated at most (about 10 s on one core); beyond, extrapolate."""


class _RankWindows:
    """The incremental CVM statistic of several windows, for `d` independent columns."""

    def __init__(self, n: int, d: int, windows: list[int]) -> None:
        self.n, self.d, self.windows = n, d, windows
        self.max_ws = windows[-1]
        self.t = 0
        self.ranks = np.zeros((self.max_ws, d), dtype=np.int64)  # ring buffer of b_j
        self.q = np.zeros((len(windows), d), dtype=np.float64)  # sum_i C_i^2
        self.s2 = np.zeros((len(windows), d), dtype=np.float64)  # sum_j b_j^2
        self.mu, self.sd = [], []
        for m in windows:
            mu, sd = _null_moments(n, m)
            self.mu.append(mu)
            self.sd.append(sd)

    def push(self, b: npt.NDArray[np.int64]) -> FloatArray:
        """Add one rank per column; returns standardised stats (windows, d), NaN until full."""
        n, pos = self.n, self.t % self.max_ws
        self.t += 1
        out = np.full((len(self.windows), self.d), np.nan)
        for k, m in enumerate(self.windows):
            if self.t > m:  # the oldest value leaves window k first
                r = self.ranks[(pos - m) % self.max_ws]
                others = self._last(pos, m - 1)
                self.q[k] -= 2 * (n - np.maximum(r, others)).sum(axis=0) + (n - r)
                self.s2[k] -= r * r
            others = self._last(pos, min(self.t - 1, m - 1))
            self.q[k] += 2 * (n - np.maximum(b, others)).sum(axis=0) + (n - b)
            self.s2[k] += b * b
            if self.t >= m:
                u = n * self.q[k] + m * self.s2[k]
                t_stat = u / (n * m * (n + m)) - (4 * n * m - 1) / (6 * (n + m))
                out[k] = (t_stat - self.mu[k]) / self.sd[k]
        self.ranks[pos] = b
        return out

    def _last(self, pos: int, count: int) -> npt.NDArray[np.int64]:
        """The `count` ranks stored before slot `pos` (the window minus the newest value)."""
        if count <= 0:
            return self.ranks[:0]
        idx = (pos - 1 - np.arange(count)) % self.max_ws
        return np.asarray(self.ranks[idx], dtype=np.int64)


def _null_moments(n: int, m: int) -> tuple[float, float]:
    """Mean and standard deviation of T without drift (Anderson 1962, eqs. 3 and 14)."""
    mu = 1 / 6 + 1 / (6 * (n + m))
    var = (
        (n + m + 1)
        * (4 * n * m * (n + m) - 3 * (n * n + m * m) - 2 * n * m)
        / (45 * (n + m) ** 2 * 4 * n * m)
    )
    return mu, float(np.sqrt(var))


class CVMOnline(OnlineDetector):
    """Per-feature online CVM with one threshold for the wanted ERT over all features."""

    def __init__(
        self,
        reference: FloatArray,
        ert: int,
        window_sizes: list[int],
        *,
        cache: ThresholdCache | None = None,
        seed: int = 0,
    ) -> None:
        self.name = "scipy:CVMOnline"
        ref = np.asarray(reference, dtype=np.float64)
        ref = ref.reshape(ref.shape[0], -1)
        self.sorted_ref = np.asfortranarray(np.sort(ref, axis=0))  # columns contiguous
        self.n, self.d = ref.shape
        self.windows = sorted({int(w) for w in window_sizes})
        self.ert = int(ert)
        # Independent features: each may alarm at rate beta, so that any alarms at 1/ERT.
        beta = 1 - (1 - 1 / self.ert) ** (1 / self.d)
        self.feature_run_length = 1 / beta
        started = time.perf_counter()
        key = cache_key(
            n=self.n,
            d=self.d,
            windows=self.windows,
            ert=self.ert,
            alarms=SIMULATED_ALARMS,
            streams=SIMULATED_STREAMS,
        )
        cached = cache.get("cvm", key) if cache else None
        if cached is not None:
            self.threshold = float(cached["threshold"])
        else:
            self.threshold = self._calibrate(np.random.default_rng(seed))
            if cache:
                cache.put("cvm", key, {"threshold": np.array(self.threshold)})
        self.setup_seconds = time.perf_counter() - started
        self.reset()

    def reset(self) -> None:
        self._state = _RankWindows(self.n, self.d, self.windows)

    def update(self, x: FloatArray) -> OnlineStep:
        values = np.asarray(x, dtype=np.float64).reshape(self.d)
        ranks = np.fromiter(
            (np.searchsorted(self.sorted_ref[:, j], values[j]) for j in range(self.d)),
            dtype=np.int64,
            count=self.d,
        )
        stats = self._state.push(ranks)
        if np.isnan(stats).all():
            return OnlineStep(drift=False, statistic=float("nan"), threshold=self.threshold)
        per_feature = np.nanmax(stats, axis=0)
        over = tuple(int(i) for i in np.nonzero(per_feature > self.threshold)[0])
        return OnlineStep(
            drift=bool(over),
            statistic=float(per_feature.max()),
            threshold=self.threshold,
            features=over,
        )

    def _calibrate(self, rng: np.random.Generator) -> float:
        """Simulate streams without drift (any continuous law will do: ranks only)."""
        streams = SIMULATED_STREAMS
        wanted = SIMULATED_ALARMS * self.feature_run_length
        steps = int(
            min(max(wanted / streams, 20 * self.windows[-1]), MAX_SIMULATED_STEPS / streams)
        )
        # Each simulated stream has its own reference sample, as a deployment would.
        # Stream s's reference lies in [s, s + 1): one sorted array serves every stream.
        lanes = np.arange(streams)
        refs = (np.sort(rng.random((streams, self.n)), axis=1) + lanes[:, None]).ravel()
        state = _RankWindows(self.n, streams, self.windows)
        stats = np.empty((len(self.windows), streams, steps), dtype=np.float32)
        for t in range(steps):
            u = rng.random(streams) + lanes
            stats[:, :, t] = state.push(np.searchsorted(refs, u) - lanes * self.n)
        return level_for_run_length(stats, self.windows, self.feature_run_length)
