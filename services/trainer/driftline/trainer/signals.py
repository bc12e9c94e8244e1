"""Drift signals on the control topic, and what the trainer does about them.

The control topic carries the drift monitor's `DriftEvent`s and the rollout's
`RolloutEvent`s. The trainer acts on drift events for its own model (once per
event id), per `spec.drift.onDrift`:

- kind `concept` with `retrain`: the labeling rule changed. A new concept epoch
  (old replay retired, anchor set and EWC anchor reset), starting from the first
  row labeled at the event's `window_start` (else the last `drift.window` rows),
  and a publish as soon as the new epoch has enough held-out rows.
- other kinds with `retrain`: the inputs moved; replay and EWC keep the old
  region, a raised learning rate for a while learns the new one faster, and the
  next version is published sooner.
- otherwise (no `retrain`): noted in the metrics, nothing else. Learning goes on
  as before, in the same epoch; the learner's own concept check is off too
  (`LearnerOptions.from_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from driftline.api.events import DriftEvent, EventError, RolloutEvent, decode
from driftline.api.spec import DriftSpec
from driftline.trainer.learner import EpochRecord, OnlineLearner

Action = Literal["epoch", "boost", "none"]


@dataclass(frozen=True)
class ControlMessage:
    """A decoded control record: a drift event, someone else's news, or junk."""

    event: DriftEvent | None = None
    error: str | None = None


def read_control(value: bytes | None) -> ControlMessage:
    try:
        return ControlMessage(event=decode(value or b"", DriftEvent))
    except EventError as exc:
        try:
            decode(value or b"", RolloutEvent)
            return ControlMessage()  # the rollout's own news: not for the trainer
        except EventError:
            return ControlMessage(error=f"control: {exc.reason}")


def respond(
    learner: OnlineLearner, event: DriftEvent, drift: DriftSpec
) -> tuple[Action, EpochRecord | None]:
    """Apply `event` to the learner; returns what was done."""
    if "retrain" not in drift.on_drift or event.kind == "data-quality":
        return "none", None  # bad inputs are for people to fix, not for the model to learn
    if event.kind == "concept":
        start = learner.seq_since(event.window_start) if event.window_start is not None else None
        if start is None:
            start = max(0, learner.seq - drift.window)
        record = learner.open_epoch(
            f"drift event {event.event_id} ({event.detector}, score {event.score:.3g})", start
        )
        return "epoch", record
    learner.boost()
    return "boost", None
