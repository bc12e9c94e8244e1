"""From detections to drift events: one shift makes one event.

A shift that lasts keeps the detectors firing (every window, or after every reset
of an online detector). The policy lets one event per kind through and holds the
repeats for `cooldown_seconds`; a detection explained by an event just sent is not
news either: a covariate shift moves the outputs too (prediction drift), and a new
labeling rule moves the label mix (label drift). After the cooldown a shift that is
still there is reported again, so it is never forgotten while nobody acts on it.

The latest event is also kept in Redis; a restarted monitor restores its cooldown
from there instead of announcing the same shift again. Event ids are derived from
the model, version, kind and the request that triggered the detection, so a replay
after a crash gives the same id and consumers can drop the duplicate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from driftline.api.events import DriftEvent, DriftKind

EXPLAINED_BY: dict[DriftKind, DriftKind] = {"prediction": "covariate", "label": "concept"}
_EVENT_NAMESPACE = uuid.UUID("6f1c2a8e-4d0b-5b7e-9a51-2c3e8d7f1b40")


@dataclass(frozen=True)
class Detection:
    """What a detector found, before the policy decides whether it is news."""

    kind: DriftKind
    detector: str
    model_version: str
    score: float
    features: list[str] = field(default_factory=list)
    p_value: float | None = None
    window_start: float | None = None
    window_end: float | None = None
    samples: int = 0
    trigger: str = ""
    """Request id of the record that completed the detection."""


class EventPolicy:
    """Cooldown per kind, and silence for detections a recent event explains."""

    def __init__(
        self,
        model: str,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.time,
        *,
        alerting: bool = False,
    ) -> None:
        self.model = model
        self.alerting = alerting
        """`drift.onDrift` has `alert`: every event sent is marked as an alert."""
        self.cooldown = cooldown_seconds
        self.clock = clock
        self.last_sent: dict[DriftKind, float] = {}

    def restore(self, event: DriftEvent) -> None:
        """Continue the cooldown of an event sent before a restart."""
        self.last_sent[event.kind] = max(self.last_sent.get(event.kind, 0.0), event.detected_at)

    def decide(self, detection: Detection) -> DriftEvent | None:
        """The event to send for `detection`, or None when it is not news."""
        now = self.clock()
        if self._cooling(detection.kind, now):
            return None
        explainer = EXPLAINED_BY.get(detection.kind)
        if explainer is not None and self._cooling(explainer, now):
            return None
        self.last_sent[detection.kind] = now
        return self.event(detection, now)

    def _cooling(self, kind: DriftKind, now: float) -> bool:
        last = self.last_sent.get(kind)
        return last is not None and now - last < self.cooldown

    def event(self, d: Detection, now: float) -> DriftEvent:
        name = f"{self.model}/{d.model_version}/{d.kind}/{d.trigger}"
        return DriftEvent(
            event_id=str(uuid.uuid5(_EVENT_NAMESPACE, name)),
            model=self.model,
            model_version=d.model_version,
            kind=d.kind,
            detector=d.detector,
            detected_at=now,
            score=d.score,
            features=d.features,
            p_value=d.p_value,
            window_start=d.window_start,
            window_end=d.window_end,
            samples=d.samples,
            alerting=self.alerting,
        )
