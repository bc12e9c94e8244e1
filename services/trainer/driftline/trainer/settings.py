"""Settings of the online trainer (environment prefix `DRIFTLINE_TRAINER_`).

What to learn and how often to publish come from the DynamicModel's `training`
section; these settings are the process's own: where its checkpoint lives, how
it reads Kafka, and the knobs of the gate and the concept check that the spec
does not expose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from driftline.common.settings import PartSettings


class TrainerSettings(PartSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_TRAINER_", extra="ignore", frozen=True)

    checkpoint_dir: Path = Field(
        default=Path("/var/lib/driftline/trainer"),
        description="Volume for the checkpoint and staged versions; must survive restarts.",
    )
    checkpoint_seconds: float = Field(
        default=30.0, gt=0, description="Checkpoint (then commit offsets) at least this often."
    )
    consume_max: int = Field(
        default=4096, ge=1, le=100_000, description="Records read per consume() call."
    )
    consume_timeout: float = Field(default=0.5, gt=0, description="Seconds a consume() waits.")
    torch_threads: int = Field(default=1, ge=1, description="CPU threads torch may use.")
    feast_python: str | None = Field(
        default=None,
        description="A Python with Feast installed, for `bootstrap --from-feast` and "
        "`retrain --from-feast` (Feast's point-in-time join runs there; Driftline never "
        "imports Feast).",
    )
    retrain_from_feast: Path | None = Field(
        default=None,
        description="A scheduled retrain reads its rows from this labeled entity file "
        "(.parquet, .csv, .jsonl) or Parquet folder, joined point in time with Feast's "
        "offline store, instead of the labeled topic; needs feast_repo. "
        "`retrain --from-feast` overrides it.",
    )
    feast_repo: Path | None = Field(
        default=None,
        description="The Feast feature repository (feature_store.yaml) of "
        "retrain_from_feast; `retrain --feast-repo` overrides it.",
    )
    seed: int = Field(default=0, description="Seed of initialisation, sampling and shuffles.")

    holdout_capacity: int = Field(default=2000, ge=10, description="Held-out rows kept.")
    anchor_capacity: int = Field(default=2000, ge=10, description="Anchor set size per epoch.")
    recent_capacity: int = Field(default=5000, ge=100, description="Recent rows kept.")
    gate_min_holdout: int = Field(
        default=200, ge=1, description="Held-out rows of the epoch needed before a gate runs."
    )
    gate_min_anchor: int = Field(
        default=100, ge=1, description="Anchor rows needed for the anchor check to apply."
    )
    reference_rows: int = Field(
        default=2000, ge=10, description="Rows in each version's reference sample."
    )
    parity_tolerance: float = Field(
        default=1e-5, gt=0, description="Largest ONNX Runtime vs torch difference allowed."
    )

    detect_concept: bool = Field(
        default=True,
        description="Open a concept epoch when the stable version's error rises with "
        "unchanged inputs (besides concept drift events).",
    )
    old_epoch_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Loss weight of replayed rows from older epochs; 0 retires them.",
    )
    drift_boost_factor: float = Field(
        default=3.0, ge=1, description="Learning-rate factor after a drift signal."
    )
    drift_boost_rows: int = Field(
        default=5000, ge=0, description="Rows the raised learning rate lasts."
    )
    drift_rehearsals: int = Field(
        default=3,
        ge=0,
        description="Extra steps on the epoch's replay rows per step while the boost lasts.",
    )
    settle_rows: int = Field(
        default=5000,
        ge=0,
        description="Rows at the start of the stream or of an epoch during which each batch "
        "gets extra steps on the epoch's replay rows, tapering to none, and the EWC anchor "
        "pulls in proportion to the epoch's age; 0: no extra steps, a full-strength anchor.",
    )
    settle_rehearsals: int = Field(
        default=6,
        ge=0,
        description="Extra steps on the epoch's replay rows per batch of rows learned at the "
        "start of an epoch (tapering over settle_rows; not while the drift boost runs).",
    )
    drift_race_rows: int = Field(
        default=5000,
        ge=0,
        description="Rows a freshly initialised network learns beside the adapted one after "
        "a concept epoch opens (the one with the lower loss serves); 0: no race.",
    )
    offline_min_steps: int = Field(
        default=25,
        ge=0,
        description="Gradient steps a small bootstrap or retrain set gets at least, in at most "
        "twice the passes asked.",
    )
    retrain_passes: int = Field(
        default=5, ge=1, description="Passes over the data of a scheduled or bootstrap training."
    )

    history_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a scheduled retrain may take to read its window of the labeled "
        "topic before it gives up (exit 1; the next run starts again).",
    )

    rank: int | None = Field(
        default=None,
        ge=0,
        description="With training.workers > 1: this process's rank in the group. Unset, "
        "the process starts the whole group itself on this machine (loopback) and restarts "
        "it from the last checkpoint when a rank dies.",
    )
    master_addr: str = Field(
        default="127.0.0.1", description="Host of rank 0's rendezvous (torch.distributed env://)."
    )
    master_port: int = Field(
        default=29500, ge=1, le=65535, description="Port of rank 0's rendezvous."
    )
    group_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a collective (gather, all-reduce) waits for the other ranks "
        "before the group is given up (then every rank restarts from the last checkpoint). "
        "A dead rank is noticed at once (its connections close); this bounds a hung one, "
        "and must cover rank 0's publish (gate, export, MLflow) between two iterations.",
    )

    quantize: bool = Field(
        default=False,
        description="Also export an int8 model when accurate, without "
        "spec.inference.quantization (the spec field, when set, decides and sets the tolerance).",
    )
    quantize_tolerance: float = Field(
        default=0.005,
        ge=0,
        description="Largest held-out or anchor score drop the int8 model may have when "
        "`quantize` asks for it without the spec field.",
    )
    mlflow_timeout: float = Field(default=10.0, gt=0, description="Seconds per MLflow request.")
    mlflow_retries: int = Field(default=2, ge=0, description="Retries per MLflow request.")

    @model_validator(mode="after")
    def _sizes(self) -> TrainerSettings:
        if self.gate_min_holdout > self.holdout_capacity:
            raise ValueError(
                f"gate_min_holdout ({self.gate_min_holdout}) cannot exceed "
                f"holdout_capacity ({self.holdout_capacity})"
            )
        return self

    def learner_settings(self) -> dict[str, Any]:
        """The settings `LearnerOptions.from_spec` takes besides the spec."""
        return {
            "holdout_capacity": self.holdout_capacity,
            "anchor_capacity": self.anchor_capacity,
            "recent_capacity": self.recent_capacity,
            "old_epoch_weight": self.old_epoch_weight,
            "detect_concept": self.detect_concept,
            "boost_factor": self.drift_boost_factor,
            "boost_rows": self.drift_boost_rows,
            "boost_rehearsals": self.drift_rehearsals,
            "race_rows": self.drift_race_rows,
            "settle_rows": self.settle_rows,
            "settle_rehearsals": self.settle_rehearsals,
            "min_offline_steps": self.offline_min_steps,
            "seed": self.seed,
        }
