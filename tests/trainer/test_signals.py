"""What the trainer does with a drift event, per `drift.onDrift`."""

from __future__ import annotations

from typing import Any, cast

import pytest

from driftline.api.events import DriftEvent
from driftline.api.spec import DriftSpec, ModelSpec, TrainingSpec
from driftline.trainer.learner import OnlineLearner
from driftline.trainer.options import EpochRecord, LearnerOptions
from driftline.trainer.signals import respond


class FakeLearner:
    """Records what `respond` asked of it."""

    def __init__(self) -> None:
        self.seq = 5000
        self.epochs: list[tuple[str, int]] = []
        self.boosts = 0

    def seq_since(self, ts: float) -> int | None:
        return 4000

    def open_epoch(self, reason: str, start: int) -> EpochRecord:
        self.epochs.append((reason, start))
        return EpochRecord(len(self.epochs), start, reason, 0.0)

    def boost(self) -> None:
        self.boosts += 1


def event(kind: str) -> DriftEvent:
    return DriftEvent(
        event_id=f"e-{kind}",
        model="m",
        model_version="1",
        kind=kind,  # type: ignore[arg-type]
        detector="errors",
        detected_at=1.0,
        score=0.5,
        window_start=10.0,
    )


@pytest.mark.parametrize(
    ("on_drift", "kind", "action"),
    [
        (["alert", "retrain"], "concept", "epoch"),
        (["retrain"], "concept", "epoch"),
        (["alert"], "concept", "none"),
        (["alert", "rollback"], "concept", "none"),
        ([], "concept", "none"),
        (["alert", "retrain"], "covariate", "boost"),
        (["alert"], "covariate", "none"),
    ],
)
def test_only_retrain_changes_the_learning(on_drift: list[str], kind: str, action: str) -> None:
    learner = FakeLearner()
    done, record = respond(
        cast(OnlineLearner, learner), event(kind), DriftSpec.model_validate({"onDrift": on_drift})
    )
    assert done == action
    assert (record is not None) == (action == "epoch") == bool(learner.epochs)
    assert learner.boosts == (action == "boost")
    if record is not None:
        assert learner.epochs[0][1] == 4000  # from the event's window start


MODEL = ModelSpec.model_validate({"registry": {"trackingUri": "http://x:1", "name": "m"}})


@pytest.mark.parametrize(
    ("on_drift", "setting", "detects"),
    [
        (["alert", "retrain"], True, True),
        (["retrain"], False, False),  # the trainer's setting can still turn it off
        (["alert"], True, False),
        (["rollback"], True, False),
    ],
)
def test_the_learner_looks_for_concept_changes_only_with_retrain(
    on_drift: list[str], setting: bool, detects: bool
) -> None:
    drift = DriftSpec.model_validate({"onDrift": on_drift})
    settings: dict[str, Any] = {"detect_concept": setting}
    options = LearnerOptions.from_spec(MODEL, TrainingSpec(), drift, **settings)
    assert options.detect_concept is detects
    assert settings == {"detect_concept": setting}  # the caller's settings are left alone
