"""Bernoulli CUSUMs on the error stream as the monitor's `cusum` concept detector.

The sequential counterpart of `FETOnline`: the CUSUMs themselves, their thresholds
and how those are simulated live in `driftline.common.bernoulli_cusum` (the trainer
uses the same code to say where a rise began). Here they get the online detector's
interface and the threshold cache.
"""

from __future__ import annotations

import time

import numpy as np

from driftline.common.bernoulli_cusum import (
    LEARN,
    ODDS_RATIOS,
    SIMULATED_ALARMS,
    STREAM_LENGTH,
    BernoulliCUSUM,
    check_odds_ratios,
    thresholds_for_run_length,
)
from driftline.drift.detectors.base import BoolArray, FloatArray, OnlineDetector, OnlineStep
from driftline.drift.detectors.cache import ThresholdCache, cache_key

THRESHOLDS = "per-alternative, equal run length"
"""How the thresholds are placed; part of the cache key (one level for all once)."""


class CUSUMOnline(OnlineDetector):
    """Bernoulli CUSUMs for several rises of the error rate, thresholds for the ERT."""

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
        self.odds_ratios = check_odds_ratios(odds_ratios)
        self.learn = LEARN * self.n
        started = time.perf_counter()
        key = cache_key(
            n=self.n,
            errors=self.errors,
            ert=self.ert,
            odds=list(self.odds_ratios),
            learn=self.learn,
            alarms=SIMULATED_ALARMS,
            streams=STREAM_LENGTH,
            thresholds=THRESHOLDS,
        )
        cached = cache.get("cusum", key) if cache else None
        if cached is not None:
            thresholds = np.asarray(cached["thresholds"], dtype=np.float64)
        else:
            thresholds = thresholds_for_run_length(
                self.n,
                self.errors,
                self.ert,
                np.random.default_rng(seed),
                odds_ratios=self.odds_ratios,
                learn=self.learn,
            )
            if cache:
                cache.put("cusum", key, {"thresholds": thresholds})
        self.thresholds = tuple(float(h) for h in thresholds)
        """One per odds ratio, in nats of evidence."""
        self.threshold = 1.0
        """The statistic is the largest sum's share of its own threshold."""
        self.cusum = BernoulliCUSUM(
            self.n, self.errors, thresholds, odds_ratios=self.odds_ratios, learn=self.learn
        )
        self.setup_seconds = time.perf_counter() - started

    def reset(self) -> None:
        self.cusum.reset()

    def update(self, x: FloatArray) -> OnlineStep:
        share = self.cusum.update(float(np.asarray(x).ravel()[0]) > 0.5)
        return OnlineStep(drift=share > self.threshold, statistic=share, threshold=self.threshold)
