"""The scipy backend: scipy statistics and numpy only, never alibi-detect.

For deployments that cannot accept alibi-detect's Business Source License (from
0.12 on). The windowed tests call the same scipy functions with the same options
as alibi-detect's `KSDrift` and `ChiSquareDrift`, so both backends give the same
p-values on the same window (tested). The online detectors are Driftline's own
implementations of the same statistics (`online_fet`, `online_cvm`, `online_mmd`),
with thresholds placed by long-stream simulation (`calibrate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp

from driftline.drift.detectors.base import (
    Backend,
    BoolArray,
    ConceptMethod,
    FeatureScore,
    FloatArray,
    InputMethod,
    IntArray,
    OnlineDetector,
    UnivariateTest,
)
from driftline.drift.detectors.cache import ThresholdCache
from driftline.drift.detectors.online_cusum import CUSUMOnline
from driftline.drift.detectors.online_cvm import CVMOnline
from driftline.drift.detectors.online_fet import FETOnline
from driftline.drift.detectors.online_mmd import MMDOnline


class KSTest(UnivariateTest):
    def __init__(self, reference: FloatArray) -> None:
        self.reference = np.asarray(reference, dtype=np.float64)

    def score(self, window: np.ndarray[Any, Any]) -> FeatureScore:
        # method="asymp" as alibi-detect calls it: exact p-values cost O(n m) and the
        # windows here are large enough for the asymptotic distribution.
        result = ks_2samp(self.reference, window, alternative="two-sided", method="asymp")
        return FeatureScore(p_value=float(result.pvalue), statistic=float(result.statistic))


class Chi2Test(UnivariateTest):
    """Chi-squared test of homogeneity on the union of reference and window categories."""

    def __init__(self, reference: IntArray, categories: list[int]) -> None:
        self.reference = np.asarray(reference)
        self.categories = list(categories)

    def score(self, window: np.ndarray[Any, Any]) -> FeatureScore:
        seen = set(self.categories).union(np.unique(window).tolist())
        columns = sorted(seen)
        table = np.array(
            [[(self.reference == c).sum() for c in columns], [(window == c).sum() for c in columns]]
        )
        if table.shape[1] < 2:  # one category in both samples: nothing can differ
            return FeatureScore(p_value=1.0, statistic=0.0)
        stat, p_value, _, _ = chi2_contingency(table)
        return FeatureScore(p_value=float(p_value), statistic=float(stat))


class ScipyBackend(Backend):
    name = "scipy"

    def __init__(self, cache: ThresholdCache | None = None, seed: int = 0) -> None:
        self.cache = cache
        self.seed = seed

    def ks(self, reference: FloatArray) -> UnivariateTest:
        return KSTest(reference)

    def chi2(self, reference: IntArray, categories: list[int]) -> UnivariateTest:
        return Chi2Test(reference, categories)

    def online_inputs(
        self, method: InputMethod, reference: FloatArray, ert: int, window_size: int
    ) -> OnlineDetector:
        if method == "mmd":
            return MMDOnline(reference, ert, window_size, cache=self.cache, seed=self.seed)
        return CVMOnline(reference, ert, [window_size], cache=self.cache, seed=self.seed)

    def online_errors(
        self,
        reference: BoolArray,
        ert: int,
        window_sizes: list[int],
        method: ConceptMethod = "fet",
    ) -> OnlineDetector:
        if method == "cusum":
            return CUSUMOnline(reference, ert, cache=self.cache, seed=self.seed)
        return FETOnline(reference, ert, window_sizes, cache=self.cache, seed=self.seed)

    def online_losses(
        self, reference: FloatArray, ert: int, window_sizes: list[int]
    ) -> OnlineDetector:
        return CVMOnline(reference, ert, window_sizes, cache=self.cache, seed=self.seed)
