"""The drift monitor's core: records in, detections out. No Kafka, Redis or MLflow here.

Which records count where:

- **Inputs** (covariate drift) and **labels** (label drift): the served requests,
  variants `stable` and `candidate`. Shadow and baseline predictions repeat the
  features of a request already served; counting them would weigh those requests
  twice.
- **Outputs** (prediction drift) and **errors** (concept drift): the serving
  version's own, variant `stable` with the version whose reference is loaded. A
  candidate's outputs are the rollout's business, not drift.

The worker builds a new `DriftMonitor` when the serving version (and with it the
reference) changes; windows and online detectors start afresh then.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from driftline.api.events import LabeledExample, Prediction
from driftline.api.spec import DynamicModelSpec
from driftline.drift import metrics
from driftline.drift.data_quality import MeanWatch
from driftline.drift.detectors.base import Backend
from driftline.drift.encoding import FeatureEncoder
from driftline.drift.event_policy import Detection
from driftline.drift.inputs import InputWatch, OutputWatch
from driftline.drift.labels import ConceptWatch, LabelWatch, error_values
from driftline.drift.monitor_config import MonitorConfig
from driftline.drift.reference import Reference

SERVED = frozenset({"stable", "candidate"})


class DriftMonitor:
    def __init__(
        self,
        model: str,
        spec: DynamicModelSpec,
        reference: Reference,
        backend: Backend,
        config: MonitorConfig,
    ) -> None:
        self.model = model
        self.version = reference.version
        self.task = spec.model.task
        self.encoder = FeatureEncoder(spec.features, reference)
        self.inputs = InputWatch(model, self.version, self.encoder, backend, config)
        self.outputs = OutputWatch(
            model, self.version, self.task, reference.output, backend, config
        )
        self.labels = LabelWatch(model, self.version, self.task, reference.label, backend, config)
        self.concept = ConceptWatch(model, self.version, self.task, backend, config)
        self.means = (
            None
            if config.data_quality is None
            else MeanWatch(model, self.version, self.encoder, config.data_quality)
        )

    def observe_predictions(self, batch: Sequence[Prediction]) -> list[Detection]:
        served = [p for p in batch if p.variant in SERVED]
        own = [p for p in served if p.variant == "stable" and p.model_version == self.version]
        self._count("predictions", len(batch), len(served), len(own))
        found: list[Detection] = []
        if served:
            encoded = self.encoder.encode([p.features for p in served])
            ts = np.array([p.ts for p in served])
            ids = [p.request_id for p in served]
            found += self.inputs.observe(encoded, ts, ids)
            if self.means is not None:
                found += self.means.observe(encoded, ts, ids)
            self._count_flags(served)
        if own:
            outputs = np.array([p.output for p in own])
            ts = np.array([p.ts for p in own])
            found += self.outputs.observe(outputs, ts, [p.request_id for p in own])
        return found

    def observe_labeled(self, batch: Sequence[LabeledExample]) -> list[Detection]:
        served = [e for e in batch if e.variant in SERVED]
        own = [e for e in served if e.variant == "stable" and e.model_version == self.version]
        self._count("labeled", len(batch), len(served), len(own))
        found: list[Detection] = []
        if served:
            labels = np.array([e.label for e in served])
            ts = np.array([e.ts_label for e in served])
            found += self.labels.observe(labels, ts, [e.request_id for e in served])
        if own:
            errors = error_values(
                self.task, np.array([e.output for e in own]), np.array([e.label for e in own])
            )
            ts = np.array([e.ts_label for e in own])
            found += self.concept.observe(errors, ts, [e.request_id for e in own])
        return found

    def _count_flags(self, served: Sequence[Prediction]) -> None:
        """Rows an `onInvalid` policy acted on at serving, per feature and action."""
        for p in served:
            if p.flags:
                for feature, action in p.flags.items():
                    metrics.flagged_total.labels(self.model, feature, action).inc()

    def _count(self, stream: str, total: int, served: int, own: int) -> None:
        metrics.samples.labels(self.model, stream).inc(served)
        if total > served:
            metrics.skipped.labels(self.model, stream, "not_served").inc(total - served)
        if served > own:
            # Used for inputs / labels, but not the serving version's own outputs.
            metrics.skipped.labels(self.model, stream, "other_version_outputs").inc(served - own)
