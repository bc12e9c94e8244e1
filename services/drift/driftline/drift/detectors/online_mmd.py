"""Online maximum mean discrepancy (MMD) over numeric inputs, in numpy.

The multivariate companion of the per-feature tests: a Gaussian-kernel MMD between
the reference and a sliding window of the last `w` inputs sees shifts that no single
feature shows (a change of correlation). This is the statistic of alibi-detect's
`MMDDriftOnline`; this implementation needs neither alibi-detect nor torch.

The reference is standardised and split in two: the detector's reference part `R`
and a calibration pool `P` drawn from the same data. Thresholds come from long
simulated streams that replay the pool in shuffled order against `R` (see
`calibrate`); with the kernel matrix of the pool computed once, a simulated step
costs O(w). A live step computes one kernel row against `R` and one against the
window: O((|R| + w) d).
"""

from __future__ import annotations

import time

import numpy as np

from driftline.drift.detectors.base import FloatArray, OnlineDetector, OnlineStep
from driftline.drift.detectors.cache import ThresholdCache, cache_key
from driftline.drift.detectors.calibrate import level_for_run_length

SIMULATED_ALARMS = 200
"""Alarms the threshold simulation sees at the ERT. With 50, thresholds for the same
reference drawn with different seeds gave run lengths from 0.8 to 1.2 x ERT (10
features, window 20, ERT 500); with 200, 0.9 to 1.0 x ERT, for a set-up of 0.2 s."""
SIMULATED_STREAMS = 64
MAX_SIMULATED_STEPS = 4_000_000


class MMDOnline(OnlineDetector):
    """Gaussian-kernel MMD on a sliding window, threshold for the wanted ERT."""

    def __init__(
        self,
        reference: FloatArray,
        ert: int,
        window_size: int,
        *,
        cache: ThresholdCache | None = None,
        seed: int = 0,
    ) -> None:
        self.name = "scipy:MMDOnline"
        ref = np.asarray(reference, dtype=np.float64)
        ref = ref.reshape(ref.shape[0], -1)
        if ref.shape[0] < 4 * window_size:
            raise ValueError(
                f"MMD needs a reference of at least 4 x window ({4 * window_size}) rows, "
                f"got {ref.shape[0]}"
            )
        self.w, self.ert = int(window_size), int(ert)
        self.mean = ref.mean(axis=0)
        self.scale = np.where(ref.std(axis=0) > 0, ref.std(axis=0), 1.0)
        z = (ref - self.mean) / self.scale
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(z))
        half = len(z) // 2
        self.ref, pool = z[order[:half]], z[order[half:]]
        self.gamma = 1.0 / (2.0 * _median_sq_distance(self.ref, rng))
        k_rr = self._kernel(self.ref, self.ref)
        self.k_rr = float((k_rr.sum() - np.trace(k_rr)) / (half * (half - 1)))
        started = time.perf_counter()
        key = cache_key(
            ref=ref,
            ert=self.ert,
            w=self.w,
            seed=seed,
            alarms=SIMULATED_ALARMS,
            streams=SIMULATED_STREAMS,
        )
        cached = cache.get("mmd", key) if cache else None
        if cached is not None:
            self.threshold = float(cached["threshold"])
        else:
            self.threshold = self._calibrate(pool, rng)
            if cache:
                cache.put("mmd", key, {"threshold": np.array(self.threshold)})
        self.setup_seconds = time.perf_counter() - started
        self.reset()

    def _kernel(self, a: FloatArray, b: FloatArray) -> FloatArray:
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.asarray(np.exp(-self.gamma * np.maximum(sq, 0.0)))

    def reset(self) -> None:
        self.t = 0
        d = self.ref.shape[1]
        self._window = np.zeros((self.w, d))
        self._k_ww = np.zeros((self.w, self.w))
        self._k_rw = np.zeros(self.w)  # mean kernel of each window point against R

    def update(self, x: FloatArray) -> OnlineStep:
        z = (np.asarray(x, dtype=np.float64).reshape(1, -1) - self.mean) / self.scale
        pos = self.t % self.w
        self.t += 1
        self._window[pos] = z[0]
        row = self._kernel(self._window, z)[:, 0]
        self._k_ww[pos, :] = row
        self._k_ww[:, pos] = row
        self._k_rw[pos] = self._kernel(self.ref, z).mean()
        if self.t < self.w:
            return OnlineStep(drift=False, statistic=float("nan"), threshold=self.threshold)
        off_diagonal = self._k_ww.sum() - np.trace(self._k_ww)
        stat = self.k_rr + off_diagonal / (self.w * (self.w - 1)) - 2 * self._k_rw.mean()
        return OnlineStep(
            drift=bool(stat > self.threshold), statistic=float(stat), threshold=self.threshold
        )

    def _calibrate(self, pool: FloatArray, rng: np.random.Generator) -> float:
        """Replay the pool in shuffled order as streams without drift; place the threshold."""
        k_pp = self._kernel(pool, pool)
        k_rp = self._kernel(self.ref, pool).mean(axis=0)
        streams, w = SIMULATED_STREAMS, self.w
        steps = int(
            min(max(SIMULATED_ALARMS * self.ert / streams, 20 * w), MAX_SIMULATED_STEPS / streams)
        )
        total = steps + w
        # Concatenated permutations: a window repeats a pool point only across a seam.
        reps = -(-total // len(pool))
        idx = np.stack(
            [
                np.concatenate([rng.permutation(len(pool)) for _ in range(reps)])[:total]
                for _ in range(streams)
            ]
        )
        cols = np.arange(streams)
        pair_sum = np.zeros(streams)  # sum over ordered pairs i != j in the window
        for j in range(1, w):
            pair_sum += 2 * k_pp[idx[:, j], idx[:, :j].T].sum(axis=0)
        csum = np.concatenate([np.zeros((streams, 1)), np.cumsum(k_rp[idx], axis=1)], axis=1)
        stats = np.full((1, streams, total), np.nan, dtype=np.float32)
        for t in range(w - 1, total):  # the window ending at sample t
            if t >= w:
                leaving, new, kept = idx[:, t - w], idx[:, t], idx[:, t - w + 1 : t]
                pair_sum += 2 * (
                    k_pp[new[:, None], kept].sum(1) - k_pp[leaving[:, None], kept].sum(1)
                )
            cross = (csum[cols, t + 1] - csum[cols, t + 1 - w]) / w
            stats[0, :, t] = self.k_rr + pair_sum / (w * (w - 1)) - 2 * cross
        return level_for_run_length(stats, [w], self.ert)


def _median_sq_distance(x: FloatArray, rng: np.random.Generator, sample: int = 500) -> float:
    """Median squared distance between reference points (the usual bandwidth heuristic)."""
    pick = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)]
    sq = (pick * pick).sum(1)[:, None] + (pick * pick).sum(1)[None, :] - 2 * pick @ pick.T
    upper = sq[np.triu_indices(len(pick), k=1)]
    med = float(np.median(upper))
    return med if med > 0 else 1.0
