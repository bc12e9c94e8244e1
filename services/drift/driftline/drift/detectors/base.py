"""The small interface every detector backend implements.

Two kinds of detectors watch a stream against a reference sample:

- **Univariate two-sample tests** (`UnivariateTest`): one feature's window of values
  against the same feature in the reference; Kolmogorov-Smirnov for numeric values,
  Chi-squared on category counts for categorical ones. The monitor combines the
  per-feature p-values with a multiple-testing correction (`correct`), so a window of
  twenty features does not raise twenty times the false alarms of one.
- **Online detectors** (`OnlineDetector`): one sample at a time, with a threshold
  configured for an expected run time (ERT, the mean number of samples between false
  alarms without drift). They react within tens of samples to a strong change instead
  of waiting for a window to fill.

A `Backend` builds both. Two exist: `alibi` (alibi-detect, BSL 1.1 from 0.12) and
`scipy` (scipy statistics and numpy, Apache-2.0 like Driftline, never imports
alibi-detect). `make_backend` imports the chosen one only, so a deployment that
cannot accept the BSL never loads alibi-detect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

Correction = Literal["bonferroni", "fdr"]
BackendName = Literal["alibi", "scipy"]
InputMethod = Literal["mmd", "cvm"]
ConceptMethod = Literal["fet", "cusum"]


@dataclass(frozen=True)
class FeatureScore:
    """One two-sample test: the p-value and the test statistic (KS distance, Chi2)."""

    p_value: float
    statistic: float


class UnivariateTest(ABC):
    """A test of one feature's window against that feature's reference sample."""

    @abstractmethod
    def score(self, window: npt.NDArray[np.generic]) -> FeatureScore:
        """Test `window` (1-D, no missing values) against the reference."""


@dataclass(frozen=True)
class Corrected:
    """Per-feature verdicts after the multiple-testing correction."""

    threshold: float
    """p-values below this are drift (alpha / d for Bonferroni, the BH cut for FDR)."""
    drifted: tuple[int, ...]
    """Indices of the features whose p-value is below `threshold`."""

    @property
    def drift(self) -> bool:
        return bool(self.drifted)


def correct(p_values: FloatArray, alpha: float, method: Correction) -> Corrected:
    """Multiple-testing correction over features, as alibi-detect's univariate detectors do.

    Bonferroni: a feature drifts when p < alpha / d. FDR (Benjamini-Hochberg): sort the
    p-values, find the largest k with p_(k) < alpha * k / d; p-values up to p_(k) drift.
    """
    d = len(p_values)
    if d == 0:
        return Corrected(threshold=alpha, drifted=())
    if method == "bonferroni":
        threshold = alpha / d
        return Corrected(threshold, tuple(int(i) for i in np.nonzero(p_values < threshold)[0]))
    ranked = np.sort(p_values)
    cuts = alpha * np.arange(1, d + 1) / d
    passing = np.nonzero(ranked < cuts)[0]
    if not passing.size:
        return Corrected(threshold=float(cuts[0]), drifted=())
    k = int(passing.max())  # step-up: every p-value up to the largest passing rank drifts
    drifted = tuple(int(i) for i in np.nonzero(p_values <= ranked[k])[0])
    return Corrected(threshold=float(cuts[k]), drifted=drifted)


@dataclass(frozen=True)
class OnlineStep:
    """What an online detector says after one more sample."""

    drift: bool
    statistic: float
    """The largest test statistic over the detector's windows (and features)."""
    threshold: float
    """The threshold `statistic` was compared with at this time step."""
    features: tuple[int, ...] = ()
    """Per-feature detectors: indices of the features over their threshold."""


class OnlineDetector(ABC):
    """A sequential detector: `update` one sample at a time, `reset` after an alarm."""

    name: str
    """What the drift event names as its detector, e.g. `alibi:FETDriftOnline`."""
    setup_seconds: float = 0.0
    """Seconds spent configuring thresholds (near 0 when they came from the cache)."""

    @abstractmethod
    def update(self, x: FloatArray) -> OnlineStep:
        """Add one sample (shape (d,) or a scalar as shape (1,)) and test."""

    @abstractmethod
    def reset(self) -> None:
        """Start a fresh test window (after a detection); thresholds are kept."""

    def update_many(self, xs: FloatArray) -> list[int]:
        """Feed rows of `xs` in order; returns the indices where drift was detected.

        The detector is reset after each detection, as the monitor does.
        """
        hits: list[int] = []
        for i in range(len(xs)):
            if self.update(xs[i]).drift:
                hits.append(i)
                self.reset()
        return hits


class Backend(ABC):
    """Builds the detectors of one implementation (alibi-detect or scipy)."""

    name: BackendName

    @abstractmethod
    def ks(self, reference: FloatArray) -> UnivariateTest:
        """Two-sided Kolmogorov-Smirnov test against a numeric reference sample."""

    @abstractmethod
    def chi2(self, reference: IntArray, categories: list[int]) -> UnivariateTest:
        """Chi-squared test on category counts (codes) against the reference codes."""

    @abstractmethod
    def online_inputs(
        self, method: InputMethod, reference: FloatArray, ert: int, window_size: int
    ) -> OnlineDetector:
        """Online detector over numeric inputs (n, d): MMD (multivariate) or per-feature CVM."""

    @abstractmethod
    def online_errors(
        self,
        reference: BoolArray,
        ert: int,
        window_sizes: list[int],
        method: ConceptMethod = "fet",
    ) -> OnlineDetector:
        """Online detector of a rise in a binary error rate.

        `fet`: Fisher's exact test over sliding windows; `cusum`: Bernoulli CUSUMs
        (sequential, no windows; `window_sizes` unused).
        """

    @abstractmethod
    def online_losses(
        self, reference: FloatArray, ert: int, window_sizes: list[int]
    ) -> OnlineDetector:
        """Online detector of a change in a continuous loss stream (Cramer-von Mises)."""
