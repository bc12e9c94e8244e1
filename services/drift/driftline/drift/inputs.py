"""Covariate drift (the inputs) and prediction drift (the serving version's outputs).

Inputs are watched in tumbling windows (`ks`: KS per numeric feature, Chi-squared per
categorical one, one correction over all), or, with an online detector
(`mmd-online`, `cvm-online`), numeric features sample by sample and categorical ones
still in windows. An online detection names features by testing the recent rows
feature by feature: MMD says *that* the inputs moved, the per-feature tests say
*where*.
"""

from __future__ import annotations

import logging

import numpy as np

from driftline.drift import metrics
from driftline.drift.detectors.base import (
    Backend,
    FloatArray,
    InputMethod,
    OnlineDetector,
    UnivariateTest,
)
from driftline.drift.encoding import Encoded, FeatureEncoder
from driftline.drift.event_policy import Detection
from driftline.drift.monitor_config import MonitorConfig
from driftline.drift.windows import FullWindow, RowWindow, WindowResult, WindowTests

log = logging.getLogger(__name__)

OUTPUT = "__output__"


def report(model: str, kind: str, result: WindowResult) -> None:
    """Export one window's tests as gauges."""
    metrics.tests.labels(model, kind).inc()
    metrics.threshold.labels(model, kind).set(result.threshold)
    metrics.detected.labels(model, kind).set(int(result.drift))
    if result.drift:
        metrics.last_detected.labels(model, kind).set_to_current_time()
    for f in result.features:
        metrics.p_value.labels(model, kind, f.name).set(f.p_value)
        metrics.score.labels(model, kind, f.name).set(f.statistic)
        metrics.feature_drift.labels(model, kind, f.name).set(int(f.drift))


def window_detection(kind: str, detector: str, version: str, result: WindowResult) -> Detection:
    drifted = result.drifted
    return Detection(
        kind=kind,  # type: ignore[arg-type]
        detector=detector,
        model_version=version,
        score=max(f.statistic for f in drifted),
        features=[f.name for f in drifted],
        p_value=min(f.p_value for f in drifted),
        window_start=result.start,
        window_end=result.end,
        samples=result.rows,
        trigger=result.last_key,
    )


class InputWatch:
    def __init__(
        self,
        model: str,
        version: str,
        encoder: FeatureEncoder,
        backend: Backend,
        config: MonitorConfig,
    ) -> None:
        self.model, self.version, self.encoder, self.config = model, version, encoder, config
        tests: dict[str, UnivariateTest] = {}
        numeric_tests = {
            name: backend.ks(_present(encoder.reference_numeric[name]))
            for name in encoder.numeric_names
        }
        cat_tests = {
            name: backend.chi2(encoder.reference_codes[name], encoder.categories(name))
            for name in encoder.categorical_names
        }
        self.online: OnlineDetector | None = None
        if config.detector in ("mmd-online", "cvm-online") and encoder.numeric_names:
            method: InputMethod = "mmd" if config.detector == "mmd-online" else "cvm"
            window = config.mmd_window if method == "mmd" else config.online_windows[0]
            self.online = backend.online_inputs(method, encoder.reference_rows, config.ert, window)
            metrics.setup_seconds.labels(model, self.online.name).set(self.online.setup_seconds)
            self.recent = RecentRows(window, len(encoder.numeric_names))
            self.attribution = WindowTests(numeric_tests, config.alpha, config.correction)
        else:
            tests.update(numeric_tests)
        tests.update(cat_tests)
        self.columns = list(tests)
        self.detector_name = f"{backend.name}:" + "+".join(
            (["ks"] if numeric_tests and self.online is None else [])
            + (["chi2"] if cat_tests else [])
        )
        self.tests = WindowTests(tests, config.alpha, config.correction, set(cat_tests))
        width = len(self.columns)
        self.window = RowWindow(config.window, width) if width else None
        self.quality = QualityWindow(model, config.window)

    def observe(self, encoded: Encoded, ts: FloatArray, keys: list[str]) -> list[Detection]:
        self.quality.add(encoded, len(ts))
        found: list[Detection] = []
        if self.online is not None:
            found.extend(self._online(encoded.numeric, ts, keys))
        if self.window is not None:
            codes = encoded.codes.astype(np.float64)
            codes[encoded.codes < 0] = np.nan
            rows = encoded.numeric if self.online is None else encoded.numeric[:, :0]
            for full in self.window.add(np.hstack([rows, codes]), ts, keys):
                result = self.tests.run(full)
                report(self.model, "covariate", result)
                if result.drift:
                    found.append(
                        window_detection("covariate", self.detector_name, self.version, result)
                    )
        return found

    def _online(self, numeric: FloatArray, ts: FloatArray, keys: list[str]) -> list[Detection]:
        assert self.online is not None
        found: list[Detection] = []
        complete = np.isfinite(numeric).all(axis=1)
        for i in np.flatnonzero(complete):
            self.recent.add(numeric[i], float(ts[i]))
            step = self.online.update(numeric[i])
            if not step.drift:
                continue
            self.online.reset()
            metrics.last_detected.labels(self.model, "covariate").set_to_current_time()
            metrics.score.labels(self.model, "covariate", "__online__").set(step.statistic)
            metrics.threshold.labels(self.model, "covariate").set(step.threshold)
            found.append(self._attribute(step.statistic, step.features, keys[i]))
        metrics.detected.labels(self.model, "covariate").set(int(bool(found)))
        return found

    def _attribute(self, statistic: float, flagged: tuple[int, ...], trigger: str) -> Detection:
        """Name the features: those the detector flagged, else the recent rows' tests."""
        rows, start, end = self.recent.rows()
        result = self.attribution.run(FullWindow(rows, start, end, trigger))
        names = self.encoder.numeric_names
        if flagged:
            features = [names[i] for i in flagged]
        elif result.drifted:
            features = [f.name for f in result.drifted]
        else:  # too few rows to be significant per feature: the likeliest one
            features = (
                [min(result.features, key=lambda f: f.p_value).name] if result.features else []
            )
        p_values = [f.p_value for f in result.features if f.name in features]
        return Detection(
            kind="covariate",
            detector=self.online.name if self.online else self.detector_name,
            model_version=self.version,
            score=statistic,
            features=features,
            p_value=min(p_values) if p_values else None,
            window_start=start,
            window_end=end,
            samples=len(rows),
            trigger=trigger,
        )


class OutputWatch:
    """Prediction drift: the serving version's outputs against its reference outputs."""

    def __init__(
        self,
        model: str,
        version: str,
        task: str,
        reference: FloatArray,
        backend: Backend,
        config: MonitorConfig,
    ) -> None:
        self.model, self.version = model, version
        test: UnivariateTest
        if task == "classification":
            codes = reference.astype(np.int64)
            test = backend.chi2(codes, sorted(set(codes.tolist())))
        else:
            test = backend.ks(reference)
        categorical = {OUTPUT} if task == "classification" else set()
        self.tests = WindowTests({OUTPUT: test}, config.alpha, config.correction, categorical)
        self.detector_name = f"{backend.name}:{'chi2' if categorical else 'ks'}"
        self.window = RowWindow(config.window, 1)

    def observe(self, outputs: FloatArray, ts: FloatArray, keys: list[str]) -> list[Detection]:
        found = []
        for full in self.window.add(outputs, ts, keys):
            result = self.tests.run(full)
            report(self.model, "prediction", result)
            if result.drift:
                found.append(
                    window_detection("prediction", self.detector_name, self.version, result)
                )
        return found


class RecentRows:
    """The last `size` complete numeric rows (for naming features after an online alarm)."""

    def __init__(self, size: int, width: int) -> None:
        self.size = size
        self._rows = np.full((size, width), np.nan)
        self._ts = np.full(size, np.nan)
        self._n = 0

    def add(self, row: FloatArray, ts: float) -> None:
        self._rows[self._n % self.size] = row
        self._ts[self._n % self.size] = ts
        self._n += 1

    def rows(self) -> tuple[FloatArray, float, float]:
        filled = min(self._n, self.size)
        ts = self._ts[:filled]
        return self._rows[:filled].copy(), float(np.min(ts)), float(np.max(ts))


class QualityWindow:
    """Data-quality counts per feature, exported as rates each `size` rows."""

    def __init__(self, model: str, size: int) -> None:
        self.model, self.size = model, size
        self.counts: dict[tuple[str, str], int] = {}
        self.rows = 0

    def add(self, encoded: Encoded, rows: int) -> None:
        for (feature, check), n in encoded.issues.items():
            self.counts[(feature, check)] = self.counts.get((feature, check), 0) + n
            if n:
                metrics.quality_total.labels(self.model, feature, check).inc(n)
        self.rows += rows
        if self.rows >= self.size:
            for (feature, check), n in self.counts.items():
                metrics.quality_rate.labels(self.model, feature, check).set(n / self.rows)
            self.counts = dict.fromkeys(self.counts, 0)
            self.rows = 0


def _present(column: FloatArray) -> FloatArray:
    return np.asarray(column[np.isfinite(column)], dtype=np.float64)
