"""Calibration alarms: does the model's confidence still say how often it is right?

A classifier that answers "class 1, 0.95" should be right about 95 % of the time on
such answers. When the world moves, accuracy often falls while confidence stays high,
and every decision that thresholds the score (approve above 0.9) goes wrong before
the accuracy dashboards move much. The joiner counts each labeled prediction in one
of ten confidence bins (`driftline.common.redis_state.calibration_fields`, with the
rest of its live quality, exactly once); this reads the bins back from Redis over
`monitoring.calibration.windowSeconds` (all replicas' counts, like the fairness
gauges) and exports the expected calibration error per version, beside the spec's
limit, for the `DriftlineModelMiscalibrated` alert.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from driftline.api.spec import CalibrationSpec
from driftline.common.redis_state import Calibration, QualityStore
from driftline.joiner import metrics

SCORED_VARIANTS = ("stable", "candidate", "shadow", "baseline")


def _merged(rows: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        for name, value in row.items():
            out[name] = out.get(name, 0.0) + value
    return out


class CalibrationGauges:
    """Keeps the calibration gauges of the versions scored lately up to date."""

    def __init__(self, quality: QualityStore, spec: CalibrationSpec) -> None:
        self.quality = quality
        self.spec = spec
        self._versions: dict[str, float] = {}
        metrics.calibration_limit.set(spec.max_error)

    def saw(self, versions: set[str], now: float) -> None:
        for version in versions:
            self._versions[version] = now

    def measure(self, client: Any, version: str, now: float) -> Calibration | None:
        """The version's calibration over the window (every variant it was scored in)."""
        window = self.spec.window_seconds
        rows = [
            self.quality.counters(version, variant).read(client, window, now)
            for variant in SCORED_VARIANTS
        ]
        return Calibration.from_fields(_merged(rows))

    def refresh(self, client: Any, now: float) -> None:
        for version, seen in list(self._versions.items()):
            measured = None
            if now - seen <= self.spec.window_seconds:
                measured = self.measure(client, version, now)
            else:
                del self._versions[version]  # no longer scored here: its gauges go
            if measured is None or measured.count < self.spec.min_samples:
                for gauge in (metrics.calibration_error, metrics.confidence_gap):
                    with suppress(KeyError):
                        gauge.remove(version)
                continue
            metrics.calibration_error.labels(version).set(measured.error)
            metrics.confidence_gap.labels(version).set(measured.confidence - measured.accuracy)
