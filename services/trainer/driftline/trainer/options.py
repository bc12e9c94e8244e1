"""What the learner is told (options) and what it tells back (reports, epochs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftline.api.spec import DriftSpec, ModelSpec, TrainingSpec


@dataclass(frozen=True)
class LearnerOptions:
    """How the learner learns: the spec's `training` section plus trainer settings."""

    batch_size: int = 256
    learning_rate: float = 1e-2
    replay_capacity: int = 50_000
    replay_fraction: float = 0.5
    ewc_lambda: float = 50.0
    holdout_fraction: float = 0.1
    holdout_capacity: int = 2000
    anchor_capacity: int = 2000
    recent_capacity: int = 5000
    old_epoch_weight: float = 0.0
    fisher_rows: int = 1024
    detect_concept: bool = True
    concept_window: int = 500
    boost_factor: float = 3.0
    boost_rows: int = 5000
    boost_rehearsals: int = 3
    catch_up_passes: int = 25
    settle_rows: int = 5000
    settle_rehearsals: int = 6
    race_rows: int = 5000
    min_offline_steps: int = 25
    remap_min_rows: int = 30
    remap_min_gain: float = 0.2
    seed: int = 0

    @classmethod
    def from_spec(
        cls,
        model: ModelSpec,
        training: TrainingSpec,
        drift: DriftSpec | None = None,
        **settings: Any,
    ) -> LearnerOptions:
        """Options of `model`'s learner. Without `retrain` in `drift.onDrift` the learner
        never opens a concept epoch by itself (`detect_concept` is off, whatever the
        settings say): a concept change is then the user's call."""
        if drift is not None and "retrain" not in drift.on_drift:
            settings = {**settings, "detect_concept": False}
        return cls(
            batch_size=training.batch_size,
            learning_rate=model.learner.learning_rate,
            replay_capacity=training.replay.capacity,
            replay_fraction=training.replay.fraction,
            ewc_lambda=training.ewc.lambda_,
            holdout_fraction=training.gate.holdout_fraction,
            **settings,
        )


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    start_seq: int
    reason: str
    at: float


@dataclass
class LearnReport:
    rows: int = 0
    held_out: int = 0
    trained: int = 0
    concept: EpochRecord | None = None
    covariate: list[str] = field(default_factory=list)
