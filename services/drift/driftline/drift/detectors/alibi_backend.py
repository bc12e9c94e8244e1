"""The alibi-detect backend (Business Source License 1.1 from alibi-detect 0.12 on).

Windowed tests are alibi-detect's `KSDrift` and `ChiSquareDrift`, one per feature;
the monitor applies the correction across features (`base.correct`, the same
Bonferroni / FDR rules as alibi-detect's multivariate detectors), so a feature with
missing values in a window does not take the rows of the other features with it.
Online detectors are `MMDDriftOnline` (torch), `CVMDriftOnline` and `FETDriftOnline`.

Two things alibi-detect leaves to its caller, done here:

- **Bounded memory.** alibi-detect's online detectors append every test statistic
  (and, for CVM and FET, every input) to arrays that grow for ever, and re-copy them
  on each step; `_AlibiOnline` trims them to what the next step reads.
- **Bounded set-up.** Thresholds are simulated at construction (seconds to tens of
  seconds); subclasses keep them in the `ThresholdCache` keyed by configuration
  (and by the reference data where the thresholds depend on it).

Importing alibi-detect takes about 10 s (it pulls in torch and transformers), so
this module imports it only when a detector is built.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any

import numpy as np

from driftline.drift.detectors.base import (
    Backend,
    BoolArray,
    ConceptMethod,
    FeatureScore,
    FloatArray,
    InputMethod,
    IntArray,
    OnlineDetector,
    OnlineStep,
    UnivariateTest,
)
from driftline.drift.detectors.cache import ThresholdCache, cache_key

N_BOOTSTRAPS_UNIVARIATE = 10_000  # alibi-detect's default for CVM and FET
N_BOOTSTRAPS_MMD = 1_000  # alibi-detect's default for MMD
MAX_BOOTSTRAPS = 60_000
"""Beyond this many simulated streams set-up takes minutes and gigabytes: refuse."""
CVM_MAX_REFERENCE = 500
"""CVM set-up grows with the square of the reference size: a random subset is used."""


MAX_BOOTSTRAPS_MMD = 10_000
"""alibi-detect's MMD simulation loops in Python per stream: ~12 s per 1,000 on 2 cores."""


def univariate_bootstraps(ert: int, window_sizes: list[int], features: int = 1) -> int:
    """Streams alibi-detect must simulate to reach the 1 - 1/ERT quantile at every step.

    Its thresholds are per-step quantiles over the streams not yet alarmed; about
    exp(-t_max / ERT) of them survive to the last step, and a 1 - 1/ERT quantile needs
    more than ERT of them (ERT x features: each feature gets its share of the alarms).
    alibi-detect refuses to configure with fewer.
    """
    t_max = 2 * max(window_sizes) - 1
    per_feature = int(np.ceil(1 / (1 - (1 - 1 / ert) ** (1 / features))))
    return _bootstraps(per_feature, t_max, N_BOOTSTRAPS_UNIVARIATE, MAX_BOOTSTRAPS)


def mmd_bootstraps(ert: int, window_size: int) -> int:
    """The same bound for `MMDDriftOnline`, whose thresholds span one window."""
    return _bootstraps(ert, window_size, N_BOOTSTRAPS_MMD, MAX_BOOTSTRAPS_MMD)


def _bootstraps(ert: int, t_max: int, default: int, ceiling: int) -> int:
    needed = int(np.ceil(1.5 * ert * np.exp(t_max / ert)))
    bootstraps = max(default, needed)
    if bootstraps > ceiling:
        raise ValueError(
            f"alibi-detect would simulate {bootstraps} streams to configure an expected run "
            f"time of {ert} (it needs more streams than the ERT); lower "
            "spec.drift.expectedRunTime, or use spec.drift.backend: scipy, whose thresholds "
            "do not need that many"
        )
    return bootstraps


class _AlibiWindowTest(UnivariateTest):
    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def score(self, window: np.ndarray[Any, Any]) -> FeatureScore:
        p_values, stats = self.detector.score(np.asarray(window).reshape(-1, 1))
        return FeatureScore(p_value=float(p_values[0]), statistic=float(stats[0]))


class _AlibiOnline(OnlineDetector):
    """Adapts an alibi-detect online detector to `OnlineDetector`, trimming its state."""

    def __init__(self, detector: Any, name: str, started: float) -> None:
        self.detector = detector
        self.name = name
        self.setup_seconds = time.perf_counter() - started
        self._univariate = hasattr(detector, "window_sizes")
        # The torch MMD detector holds a float32 reference and refuses float64 samples.
        self._dtype = np.float64 if self._univariate else np.float32

    def update(self, x: FloatArray) -> OnlineStep:
        det = self.detector
        sample = np.asarray(x, dtype=self._dtype).reshape(-1)
        data = det.predict(sample, return_test_stat=True)["data"]
        # Keep only what the next step reads (see the module docstring).
        det.test_stats = det.test_stats[-1:]
        det.drift_preds = det.drift_preds[-1:]
        if self._univariate:
            det.xs = det.xs[-det.max_ws :]
            stats = np.asarray(data["test_stat"], dtype=np.float64)
            thresholds = np.asarray(data["threshold"], dtype=np.float64).reshape(-1)
            if np.isnan(stats).all():
                return OnlineStep(False, float("nan"), float(thresholds.min()))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_feature = np.nanmax(stats, axis=0)
            over = tuple(int(i) for i in np.nonzero(per_feature > thresholds)[0])
            return OnlineStep(
                drift=bool(data["is_drift"]),
                statistic=float(np.nanmax(per_feature)),
                threshold=float(thresholds.min()),
                features=over,
            )
        return OnlineStep(
            drift=bool(data["is_drift"]),
            statistic=float(data["test_stat"]),
            threshold=float(data["threshold"]),
        )

    def reset(self) -> None:
        self.detector.reset_state()


def _cached(base: type, kind: str, cache: ThresholdCache | None, key: str) -> type:
    """`base` with threshold configuration served from `cache` when it holds `key`."""

    class Cached(base):  # type: ignore[misc]
        def _configure_thresholds(self) -> None:
            hit = cache.get(kind, key) if cache else None
            if hit is not None:
                # MMD keeps a list of scalars (one per time step), the others an array.
                thresholds = hit["thresholds"]
                self.thresholds = (
                    [float(v) for v in thresholds] if kind == "alibi-mmd" else thresholds
                )
                if "permit_probs" in hit:
                    self.permit_probs = hit["permit_probs"]
                return
            super()._configure_thresholds()
            if cache:
                thresholds = (
                    np.array([float(v) for v in self.thresholds])
                    if kind == "alibi-mmd"
                    else np.asarray(self.thresholds)
                )
                arrays = {"thresholds": thresholds}
                if hasattr(self, "permit_probs"):
                    arrays["permit_probs"] = np.asarray(self.permit_probs)
                cache.put(kind, key, arrays)

    Cached.__name__ = base.__name__
    return Cached


class AlibiBackend(Backend):
    name = "alibi"

    def __init__(
        self, cache: ThresholdCache | None = None, seed: int = 0, threads: int = 1
    ) -> None:
        self.cache = cache
        self.seed = seed
        # A stream processor works one sample at a time: torch's and numba's thread
        # pools only fight over the pod's cores (0.8 ms a sample with 2 threads on a
        # busy 2-core node against 0.23 ms with one; set-up 10x slower).
        import numba  # type: ignore[import-untyped]
        import torch

        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

    def ks(self, reference: FloatArray) -> UnivariateTest:
        from alibi_detect.cd import KSDrift

        return _AlibiWindowTest(KSDrift(np.asarray(reference).reshape(-1, 1)))

    def chi2(self, reference: IntArray, categories: list[int]) -> UnivariateTest:
        from alibi_detect.cd import ChiSquareDrift

        return _AlibiWindowTest(
            ChiSquareDrift(
                np.asarray(reference).reshape(-1, 1),
                categories_per_feature={0: [int(c) for c in categories]},
            )
        )

    def online_inputs(
        self, method: InputMethod, reference: FloatArray, ert: int, window_size: int
    ) -> OnlineDetector:
        if method == "cvm":
            rows = np.asarray(reference, dtype=np.float64)
            return self._cvm(rows.reshape(rows.shape[0], -1), ert, [window_size])
        ref = np.asarray(reference, dtype=np.float32)
        ref = ref.reshape(ref.shape[0], -1)
        from alibi_detect.cd.pytorch.mmd_online import MMDDriftOnlineTorch

        started = time.perf_counter()
        bootstraps = mmd_bootstraps(ert, window_size)
        key = cache_key(ref=ref, ert=ert, w=window_size, b=bootstraps)
        cls = _cached(MMDDriftOnlineTorch, "alibi-mmd", self.cache, key)
        self._seed()
        det = cls(
            ref,
            ert=ert,
            window_size=window_size,
            n_bootstraps=bootstraps,
            device="cpu",
            verbose=False,
        )
        return _AlibiOnline(det, "alibi:MMDDriftOnline", started)

    def online_errors(
        self,
        reference: BoolArray,
        ert: int,
        window_sizes: list[int],
        method: ConceptMethod = "fet",
    ) -> OnlineDetector:
        if method != "fet":
            raise ValueError(
                f"the alibi backend has no {method} concept detector: set drift.backend scipy"
            )
        ref = np.asarray(reference, dtype=bool).reshape(-1)
        # alibi-detect refuses a reference of only 0s or only 1s (no thresholds can be
        # configured); one pseudo-count keeps the rate away from 0 and 1.
        if not ref.any():
            ref = np.append(ref, True)
        elif ref.all():
            ref = np.append(ref, False)
        started = time.perf_counter()
        bootstraps = univariate_bootstraps(ert, window_sizes)
        fet = tabulated_fet()
        key = cache_key(
            n=ref.size,
            errors=int(ref.sum()),
            windows=sorted(window_sizes),
            ert=ert,
            b=bootstraps,
            reference_error=fet.reference_error,
        )
        cls = _cached(fet, "alibi-fet", self.cache, key)
        self._seed()
        det = cls(
            ref.reshape(-1, 1),
            ert=ert,
            window_sizes=sorted(window_sizes),
            n_bootstraps=bootstraps,
            verbose=False,
        )
        return _AlibiOnline(det, "alibi:FETDriftOnline", started)

    def online_losses(
        self, reference: FloatArray, ert: int, window_sizes: list[int]
    ) -> OnlineDetector:
        return self._cvm(np.asarray(reference, dtype=np.float64).reshape(-1, 1), ert, window_sizes)

    def _cvm(self, ref: FloatArray, ert: int, window_sizes: list[int]) -> OnlineDetector:
        from alibi_detect.cd import CVMDriftOnline

        started = time.perf_counter()
        if len(ref) > CVM_MAX_REFERENCE:
            pick = np.random.default_rng(self.seed).choice(
                len(ref), CVM_MAX_REFERENCE, replace=False
            )
            ref = ref[np.sort(pick)]
        bootstraps = univariate_bootstraps(ert, window_sizes, features=ref.shape[1])
        # CVM thresholds are rank based: they depend on sizes only, not on the data.
        key = cache_key(
            n=ref.shape[0], d=ref.shape[1], windows=sorted(window_sizes), ert=ert, b=bootstraps
        )
        cls = _cached(CVMDriftOnline, "alibi-cvm", self.cache, key)
        self._seed()
        det = cls(
            ref,
            ert=ert,
            window_sizes=sorted(window_sizes),
            n_bootstraps=bootstraps,
            verbose=False,
        )
        return _AlibiOnline(det, "alibi:CVMDriftOnline", started)

    def _seed(self) -> None:
        """alibi-detect draws from the global generators; make set-up reproducible."""
        import torch

        np.random.seed(self.seed)
        torch.manual_seed(self.seed)


@functools.cache
def tabulated_fet() -> type[Any]:
    """alibi-detect's `FETDriftOnline` with its hypergeometric p-values tabulated.

    The FET p-value of a window depends only on the window's error count, yet
    alibi-detect 0.13 evaluates `scipy.stats.hypergeom.cdf` for every simulated step
    of every bootstrap stream (10,000 x 2 max-window steps: minutes of set-up on two
    cores) and again for every live sample. This subclass computes each window's
    p-values once, for every possible count, and looks them up; its threshold
    procedure drops alarmed streams by index instead of copying the matrix each step.
    With `reference_error = False`: same random draws, same numbers (a test checks
    thresholds and statistics against alibi-detect's own methods); only the work is
    done once instead of millions of times.

    One change of substance, on by default (`reference_error`): alibi-detect simulates
    every stream against the observed reference, as if its error rate were the true
    one. The reference is a sample too (the serving model's first errors, ~1,000 of
    them): when its count falls below the true rate by chance, the detector alarms far
    more often than the ERT promises, from the first windows on (a reference of 1,000
    at a true error rate of 0.16, one standard deviation low: a false alarm within
    2,000 samples 18 % of the time instead of the 9.5 % an ERT of 20,000 allows;
    averaged over references 13.1 %). So each simulated stream draws its own reference
    count around the observed one, as the scipy backend does, and the thresholds hold
    on average over the references a stream could have produced (there: 9.5 %, and
    1.7 % instead of 2.2 % in the first 300 samples, where 1.5 % is allowed).
    """
    from alibi_detect.cd import FETDriftOnline
    from alibi_detect.utils.misc import quantile
    from scipy.stats import hypergeom

    class TabulatedFET(FETDriftOnline):  # type: ignore[misc]
        reference_error = True
        """Simulate each stream against its own draw of the reference (see above)."""

        def _configure_thresholds(self) -> None:
            """alibi-detect's procedure, tracking surviving streams by index.

            The original copies the whole (streams x steps) matrix at every step to drop
            the streams that alarmed; keeping their indices instead gives the same
            thresholds (same order, same random draws) without the copies.
            """
            beta = 1 - (1 - self.fpr) ** (1 / self.n_features)
            self.permit_probs = np.full((self.t_max, self.n_features), np.nan)
            thresholds = np.full((self.t_max, self.n_features), np.nan, dtype=np.float32)
            for f in range(self.n_features):
                stats = self._simulate_streams(self.x_ref[:, f], None)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN before full
                    max_stats = np.nanmax(stats, -1)
                alive = np.arange(len(max_stats))
                for t in range(np.min(self.window_sizes) - 1, self.t_max):
                    column = max_stats[alive, t]
                    threshold = np.float32(quantile(column, 1 - beta, interpolate=False, type=6))
                    below = column < threshold
                    prob_of_equal = (column <= threshold).mean() - below.mean()
                    if prob_of_equal == 0.0:
                        permit_prob = np.inf
                        alive = alive[below]
                    else:
                        permit_prob = (1 - beta - below.mean()) / prob_of_equal
                        equal = alive[column == threshold]
                        keep = np.random.binomial(len(equal), permit_prob)
                        alive = np.concatenate([alive[below], equal[:keep]])
                    thresholds[t, f] = threshold
                    self.permit_probs[t, f] = permit_prob
            self.thresholds = thresholds

        def _tables(self, sum_ref: float) -> list[np.ndarray[Any, Any]]:
            tables = []
            for ws in self.window_sizes:
                counts = np.arange(ws + 1)
                if self.alternative == "greater":
                    p = hypergeom.cdf(sum_ref, self.n + ws, sum_ref + counts, self.n)
                else:
                    p = hypergeom.cdf(counts, self.n + ws, sum_ref + counts, ws)
                tables.append(1 - p)
            return tables

        def _simulate_streams(self, x_ref: np.ndarray[Any, Any], pbar: Any) -> Any:
            p, sum_ref = np.mean(x_ref), np.sum(x_ref)
            stats = np.full(
                (self.n_bootstraps, self.t_max, len(self.window_sizes)), np.nan, dtype=np.float32
            )
            stream = np.random.choice([False, True], (self.n_bootstraps, self.t_max), p=[1 - p, p])
            csum = np.concatenate(
                [np.zeros_like(stream[..., :1], dtype=np.int64), np.cumsum(stream, axis=-1)],
                axis=-1,
            )
            if self.reference_error:
                # Half a count away from 0 and n, as alibi-detect's reference must be.
                rate = (sum_ref + 0.5) / (self.n + 1)
                refs = np.random.binomial(self.n, rate, self.n_bootstraps)
            else:
                refs = np.full(self.n_bootstraps, int(sum_ref))
            for ref in np.unique(refs):
                rows = np.flatnonzero(refs == ref)
                for k, (ws, table) in enumerate(
                    zip(self.window_sizes, self._tables(ref), strict=True)
                ):
                    counts = csum[rows, ws:] - csum[rows, :-ws]
                    stats[rows, ws - 1 :, k] = self._exp_moving_avg(table[counts], self.lam)
            return stats

        def score(self, x_t: Any) -> Any:
            if not hasattr(self, "_live_tables"):
                self._live_tables = [self._tables(s) for s in np.atleast_1d(self.sum_ref)]
            x_t = self._preprocess_xt(x_t)
            self._update_state(x_t)
            stats = np.full((len(self.window_sizes), self.n_features), np.nan, dtype=np.float32)
            for k, ws in enumerate(self.window_sizes):
                if self.t < ws:
                    continue
                counts = np.sum(self.xs[-ws:, :], axis=0).astype(np.int64)
                for f in range(self.n_features):
                    value = self._live_tables[f][k][counts[f]]
                    if len(self.test_stats) and not np.isnan(self.test_stats[-1, k, f]):
                        value = (1 - self.lam) * self.test_stats[-1, k, f] + self.lam * value
                    stats[k, f] = value
            return stats

    return TabulatedFET
