"""Accuracy before the labels: confidence-based performance estimation (CBPE).

Labels arrive late (a loan defaults in months, a churn is known in weeks), and until
then live accuracy is unknown. A classifier's confidence says how often it should be
right, once that confidence is calibrated: of the answers given with 0.9, the share
that turned out right. The joiner counts the labeled predictions of each version in
ten confidence bins (`driftline.common.redis_state.calibration_fields`); this reads
those bins from Redis, maps every recent served prediction's confidence to its bin's
observed accuracy, and averages: the accuracy the latest `window` predictions should
have, estimated without one of their labels. A bin with fewer than `min_bin_labels`
labeled predictions takes the confidence at its word.

Each estimate is also written to Redis (`EstimateStore`, with its time and row
count), where the rollout reads it as early evidence (`rollout.analysis.estimate`).
A candidate in shadow is estimated on its shadow answers: the same requests the
stable version answered, so the two estimates compare like with like.

What this cannot see: a change of concept where the model stays as sure as before
(its confidence says nothing about it); that is the concept detector's and the
calibration alarm's part, once labels come. What it sees early: traffic moving to
regions where the model is unsure, and a version that is sure where it was wrong.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from driftline.api.events import Prediction
from driftline.common.redis_state import (
    CALIBRATION_BINS,
    AccuracyEstimate,
    Calibration,
    EstimateStore,
    QualityStore,
)
from driftline.drift import metrics

log = logging.getLogger(__name__)

SERVED = ("stable", "candidate", "shadow")
"""The variants whose answers are estimated: those that reached clients, and a shadow
candidate's (scored on the requests the stable version answered)."""
LABELED_VARIANTS = ("stable", "candidate", "shadow", "baseline")


def estimated_accuracy(
    confidences: Sequence[float], calibration: Calibration | None, min_bin_labels: int
) -> float | None:
    """The mean chance of being right of predictions with these confidences."""
    if not confidences:
        return None
    bins = calibration.bins if calibration is not None else ()
    total = 0.0
    for c in confidences:
        k = min(max(int(c * CALIBRATION_BINS), 0), CALIBRATION_BINS - 1)
        if k < len(bins) and bins[k][0] >= min_bin_labels:
            total += bins[k][2]
        else:
            total += c
    return total / len(confidences)


class PerformanceEstimator:
    """Keeps the confidences of each version's latest served predictions and exports
    their estimated accuracy."""

    def __init__(
        self,
        name: str,
        quality: QualityStore,
        window: int,
        calibration_window_seconds: float,
        min_bin_labels: int = 30,
        store: EstimateStore | None = None,
    ) -> None:
        self.name = name
        self.quality = quality
        self.window = window
        self.calibration_window_seconds = calibration_window_seconds
        self.min_bin_labels = min_bin_labels
        self.store = store
        self._recent: dict[str, deque[float]] = {}

    def observe(self, batch: Sequence[Prediction]) -> None:
        for p in batch:
            if p.variant not in SERVED or not p.scores:
                continue
            answered = int(p.output)
            if not 0 <= answered < len(p.scores):
                continue
            recent = self._recent.get(p.model_version)
            if recent is None:
                recent = self._recent[p.model_version] = deque(maxlen=self.window)
            recent.append(float(p.scores[answered]))

    def estimate(self, client: Any, version: str, now: float | None = None) -> float | None:
        recent = self._recent.get(version)
        if not recent:
            return None
        rows: dict[str, float] = {}
        for variant in LABELED_VARIANTS:
            counters = self.quality.counters(version, variant)
            for field, value in counters.read(client, self.calibration_window_seconds, now).items():
                rows[field] = rows.get(field, 0.0) + value
        return estimated_accuracy(list(recent), Calibration.from_fields(rows), self.min_bin_labels)

    def refresh(self, client: Any, serving: set[str], now: float | None = None) -> None:
        """Export the estimate of each version still serving (gauges, and Redis when a
        store is set); forget the others."""
        for version in list(self._recent):
            if version not in serving:
                del self._recent[version]
                for gauge in (metrics.estimated_accuracy, metrics.estimate_rows):
                    with suppress(KeyError):
                        gauge.remove(self.name, version)
                if self.store is not None:
                    self.store.forget(client, version)
                continue
            value = self.estimate(client, version, now)
            if value is None:
                continue
            rows = len(self._recent[version])
            metrics.estimated_accuracy.labels(self.name, version).set(value)
            metrics.estimate_rows.labels(self.name, version).set(rows)
            if self.store is not None:
                at = time.time() if now is None else now
                self.store.write(client, version, AccuracyEstimate(value, rows, at))
