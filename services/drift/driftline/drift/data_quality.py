"""The data-quality alarm: a numeric feature's live mean far from its training baseline.

A drift test asks whether a distribution changed; this asks a narrower question that a
broken producer answers loudly (a unit changed, a default written for every row, a
column shifted): is the mean of the latest `window` live values further than `sigmas`
standard errors from the baseline mean? The standard error is the baseline's sampling
distribution of a mean of `window` values, std / sqrt(window). Windows tumble: each
live value counts in one window. Missing values are not in the mean (the drift
monitor counts them apart); a feature whose baseline has no spread is not watched.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from driftline.api.spec import DataQualitySpec
from driftline.drift import metrics
from driftline.drift.detectors.base import FloatArray
from driftline.drift.encoding import Encoded, FeatureEncoder
from driftline.drift.event_policy import Detection

KIND: Final = "data-quality"
DETECTOR = "mean-shift"


class MeanWatch:
    """Tumbling windows of each numeric feature's live values, against the baseline."""

    def __init__(
        self, model: str, version: str, encoder: FeatureEncoder, data_quality: DataQualitySpec
    ) -> None:
        self.model = model
        self.version = version
        self.window = data_quality.window
        self.sigmas = data_quality.sigmas
        self.baseline: dict[str, tuple[float, float]] = {}
        """feature -> (mean, standard error of a window's mean) from the reference."""
        for name, values in encoder.reference_numeric.items():
            finite = values[np.isfinite(values)]
            std = float(finite.std()) if finite.size > 1 else 0.0
            if std > 0:
                self.baseline[name] = (float(finite.mean()), std / math.sqrt(self.window))
        self.columns = [encoder.numeric_names.index(name) for name in self.baseline]
        self.pending: dict[str, list[FloatArray]] = {name: [] for name in self.baseline}
        self.held: dict[str, int] = dict.fromkeys(self.baseline, 0)
        for name in self.baseline:  # alarms are counted from 0: "none yet" is a series too
            metrics.quality_alarm_total.labels(self.model, name)

    def observe(self, encoded: Encoded, ts: FloatArray, request_ids: list[str]) -> list[Detection]:
        shifted: dict[str, float] = {}
        for name, j in zip(self.baseline, self.columns, strict=True):
            column = encoded.numeric[:, j]
            live = column[np.isfinite(column)]
            if not live.size:
                continue
            self.pending[name].append(live)
            self.held[name] += live.size
            while self.held[name] >= self.window:
                values = np.concatenate(self.pending[name])
                mean = float(values[: self.window].mean())
                rest = values[self.window :]
                self.pending[name] = [rest] if rest.size else []
                self.held[name] = rest.size
                baseline_mean, standard_error = self.baseline[name]
                z = abs(mean - baseline_mean) / standard_error
                metrics.mean_shift.labels(self.model, name).set(z)
                if z > self.sigmas:
                    shifted[name] = max(z, shifted.get(name, 0.0))
        if not shifted:
            return []
        for name in shifted:
            metrics.quality_alarm_total.labels(self.model, name).inc()
        return [
            Detection(
                kind=KIND,
                detector=DETECTOR,
                model_version=self.version,
                score=max(shifted.values()),
                features=sorted(shifted),
                window_start=float(ts[0]) if ts.size else None,
                window_end=float(ts[-1]) if ts.size else None,
                samples=self.window,
                trigger=request_ids[-1] if request_ids else "",
            )
        ]
