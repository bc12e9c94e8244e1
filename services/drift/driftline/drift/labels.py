"""Concept drift and label drift, from the labeled stream.

A new labeling rule leaves the inputs (and the outputs) as they were: only the
serving model's errors show it. Each labeled example of the serving version gives
one error value, `output != label` for classification or the squared error for
regression; the first `concept_reference` of them form the error reference, and an
online detector (Fisher's exact test or Bernoulli CUSUMs on the error indicator, as
`drift.concept.detector` says; Cramer-von Mises on losses) watches every later one.
It alarms when the error rate rises (or the loss distribution moves), then starts
afresh against the same reference.

Label drift is the mix of labels moving (a prior shift). It is tested in windows
against the reference sample's labels when the trainer stored them, else against
the first full window of live labels.
"""

from __future__ import annotations

import logging

import numpy as np

from driftline.drift import metrics
from driftline.drift.detectors.base import Backend, FloatArray, OnlineDetector, UnivariateTest
from driftline.drift.event_policy import Detection
from driftline.drift.inputs import report, window_detection
from driftline.drift.monitor_config import MonitorConfig
from driftline.drift.windows import RowWindow, WindowTests

log = logging.getLogger(__name__)

LABEL = "__label__"
ERROR = "__error__"


def error_values(task: str, outputs: FloatArray, labels: FloatArray) -> FloatArray:
    """Per-example error: 1.0 / 0.0 for a wrong / right class, else the squared error."""
    if task == "classification":
        return np.asarray(np.rint(outputs) != np.rint(labels), dtype=np.float64)
    return np.asarray((outputs - labels) ** 2, dtype=np.float64)


class ConceptWatch:
    def __init__(
        self, model: str, version: str, task: str, backend: Backend, config: MonitorConfig
    ) -> None:
        self.model, self.version, self.task = model, version, task
        self.backend, self.config = backend, config
        self._reference: list[FloatArray] = []
        self._have = 0
        self.detector: OnlineDetector | None = None
        self.disabled = False
        self._ts = np.zeros(max(config.online_windows))  # when each recent value arrived
        self._seen = 0

    @property
    def ready(self) -> bool:
        return self.detector is not None

    def observe(self, errors: FloatArray, ts: FloatArray, keys: list[str]) -> list[Detection]:
        found: list[Detection] = []
        start = 0
        if self.disabled:
            return found
        if self.detector is None:
            start = self._collect(errors)
        det = self.detector
        if det is None:
            return found
        for i in range(start, len(errors)):
            self._ts[self._seen % self._ts.size] = ts[i]
            self._seen += 1
            step = det.update(errors[i : i + 1])
            if not step.drift:
                continue
            det.reset()
            metrics.last_detected.labels(self.model, "concept").set_to_current_time()
            metrics.score.labels(self.model, "concept", ERROR).set(step.statistic)
            metrics.threshold.labels(self.model, "concept").set(step.threshold)
            recent = self._ts[: min(self._seen, self._ts.size)]
            found.append(
                Detection(
                    kind="concept",
                    detector=det.name,
                    model_version=self.version,
                    score=step.statistic,
                    features=[ERROR],
                    window_start=float(recent.min()),
                    window_end=float(ts[i]),
                    samples=min(self._seen, self._ts.size),
                    trigger=keys[i],
                )
            )
            self._seen = 0
        metrics.detected.labels(self.model, "concept").set(int(bool(found)))
        return found

    def _collect(self, errors: FloatArray) -> int:
        """Gather the error reference; build the detector once it is complete."""
        take = min(self.config.concept_reference - self._have, len(errors))
        self._reference.append(errors[:take])
        self._have += take
        if self._have >= self.config.concept_reference:
            reference = np.concatenate(self._reference)
            self._reference = []
            windows, ert = self.config.online_windows, self.config.ert
            try:
                if self.task == "classification":
                    self.detector = self.backend.online_errors(
                        reference > 0.5, ert, windows, self.config.concept_detector
                    )
                else:
                    self.detector = self.backend.online_losses(reference, ert, windows)
            except ValueError as exc:  # a configuration the backend cannot serve
                log.error("concept drift is not watched for version %s: %s", self.version, exc)
                self.disabled = True
                return take
            metrics.setup_seconds.labels(self.model, self.detector.name).set(
                self.detector.setup_seconds
            )
            log.info(
                "concept detector %s ready for version %s: error reference mean %.4f over %d "
                "examples, set-up %.2fs",
                self.detector.name,
                self.version,
                float(reference.mean()),
                reference.size,
                self.detector.setup_seconds,
            )
        return take


class LabelWatch:
    def __init__(
        self,
        model: str,
        version: str,
        task: str,
        reference: FloatArray | None,
        backend: Backend,
        config: MonitorConfig,
    ) -> None:
        self.model, self.version, self.task = model, version, task
        self.backend, self.config = backend, config
        self.window = RowWindow(config.window, 1)
        self.tests: WindowTests | None = None
        if reference is not None and reference.size:
            self.tests = self._tests(reference)
        self.detector_name = f"{backend.name}:{'chi2' if task == 'classification' else 'ks'}"

    def _tests(self, reference: FloatArray) -> WindowTests:
        test: UnivariateTest
        if self.task == "classification":
            codes = np.rint(reference).astype(np.int64)
            test = self.backend.chi2(codes, sorted(set(codes.tolist())))
        else:
            test = self.backend.ks(reference)
        categorical = {LABEL} if self.task == "classification" else set()
        return WindowTests({LABEL: test}, self.config.alpha, self.config.correction, categorical)

    def observe(self, labels: FloatArray, ts: FloatArray, keys: list[str]) -> list[Detection]:
        found = []
        for full in self.window.add(labels, ts, keys):
            if self.tests is None:  # no stored labels: the first window is the reference
                self.tests = self._tests(full.values[:, 0])
                continue
            result = self.tests.run(full)
            report(self.model, "label", result)
            if result.drift:
                found.append(window_detection("label", self.detector_name, self.version, result))
        return found
