"""Tumbling windows of live rows, and the per-feature tests run when one is full.

A window holds exactly `size` rows; rows past it start the next window, so every
row is tested once and memory stays at one window per stream whatever the rate.
When a window is full, each feature is tested against its reference sample (KS or
Chi-squared, from the backend) on the rows where it is present, and the p-values go
through one multiple-testing correction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from driftline.drift.detectors.base import (
    Correction,
    FloatArray,
    UnivariateTest,
    correct,
)

MIN_VALUES = 8
"""A feature with fewer present values in a window is not tested in that window."""


@dataclass(frozen=True)
class FeatureResult:
    name: str
    p_value: float
    statistic: float
    drift: bool


@dataclass(frozen=True)
class WindowResult:
    """The tests of one full window."""

    features: list[FeatureResult]
    threshold: float
    rows: int
    start: float
    end: float
    last_key: str
    """Request id of the window's last row (names the event deterministically)."""

    @property
    def drift(self) -> bool:
        return any(f.drift for f in self.features)

    @property
    def drifted(self) -> list[FeatureResult]:
        return [f for f in self.features if f.drift]


@dataclass(frozen=True)
class FullWindow:
    values: FloatArray
    start: float
    end: float
    last_key: str


class RowWindow:
    """Collects rows of `width` float columns into tumbling windows of `size` rows."""

    def __init__(self, size: int, width: int) -> None:
        self.size, self.width = size, width
        self._rows: list[FloatArray] = []
        self._ts: list[FloatArray] = []
        self._keys: list[str] = []
        self.count = 0

    def add(self, rows: FloatArray, ts: FloatArray, keys: list[str]) -> list[FullWindow]:
        """Add rows (and their timestamps, request ids); returns the windows they filled."""
        full: list[FullWindow] = []
        rows = rows.reshape(len(ts), self.width)
        i = 0
        while i < len(ts):
            take = min(self.size - self.count, len(ts) - i)
            self._rows.append(rows[i : i + take])
            self._ts.append(ts[i : i + take])
            self._keys.append(keys[i + take - 1])
            self.count += take
            i += take
            if self.count == self.size:
                times = np.concatenate(self._ts)
                full.append(
                    FullWindow(
                        np.concatenate(self._rows),
                        float(times.min()),
                        float(times.max()),
                        self._keys[-1],
                    )
                )
                self.clear()
        return full

    def clear(self) -> None:
        self._rows, self._ts, self._keys, self.count = [], [], [], 0


class WindowTests:
    """One univariate test per column, combined with a multiple-testing correction.

    Columns hold floats with NaN for missing values; `categorical` names the columns
    that hold category codes (tested as integers).
    """

    def __init__(
        self,
        tests: Mapping[str, UnivariateTest],
        alpha: float,
        method: Correction,
        categorical: set[str] | None = None,
    ) -> None:
        self.names = list(tests)
        self.tests = [tests[n] for n in self.names]
        self.alpha, self.method = alpha, method
        self.categorical = categorical or set()

    def run(self, window: FullWindow) -> WindowResult:
        tested: list[tuple[str, float, float]] = []
        for j, (name, test) in enumerate(zip(self.names, self.tests, strict=True)):
            column = window.values[:, j]
            present = column[~np.isnan(column)]
            if present.size < MIN_VALUES:
                continue
            result = test.score(present.astype(np.int64) if name in self.categorical else present)
            tested.append((name, result.p_value, result.statistic))
        verdict = correct(np.array([p for _, p, _ in tested]), self.alpha, self.method)
        features = [
            FeatureResult(name, p, stat, i in verdict.drifted)
            for i, (name, p, stat) in enumerate(tested)
        ]
        return WindowResult(
            features,
            verdict.threshold,
            len(window.values),
            window.start,
            window.end,
            window.last_key,
        )
