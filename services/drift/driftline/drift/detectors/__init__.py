"""Drift detectors behind one small interface, with two interchangeable backends.

`make_backend("alibi")` uses alibi-detect (Business Source License 1.1 from 0.12);
`make_backend("scipy")` uses scipy statistics and numpy only and never imports
alibi-detect. Both give the same p-values on the same windows.
"""

from __future__ import annotations

from pathlib import Path

from driftline.drift.detectors.base import (
    Backend,
    BackendName,
    Corrected,
    Correction,
    FeatureScore,
    OnlineDetector,
    OnlineStep,
    UnivariateTest,
    correct,
)
from driftline.drift.detectors.cache import ThresholdCache


def make_backend(
    name: BackendName, cache_dir: Path | None = None, seed: int = 0, threads: int = 1
) -> Backend:
    """The backend called `name`; only its own module (and libraries) is imported.

    `threads` bounds torch's and numba's thread pools (alibi-detect only).
    """
    cache = ThresholdCache(cache_dir)
    if name == "alibi":
        from driftline.drift.detectors.alibi_backend import AlibiBackend

        return AlibiBackend(cache, seed, threads)
    if name == "scipy":
        from driftline.drift.detectors.scipy_backend import ScipyBackend

        return ScipyBackend(cache, seed)
    raise ValueError(f"unknown drift backend {name!r}: use 'alibi' or 'scipy'")


__all__ = [
    "Backend",
    "BackendName",
    "Corrected",
    "Correction",
    "FeatureScore",
    "OnlineDetector",
    "OnlineStep",
    "ThresholdCache",
    "UnivariateTest",
    "correct",
    "make_backend",
]
