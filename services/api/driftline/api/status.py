"""The `DynamicModel` status: what the operator (or the local runtime) reports back.

Written only through the status subresource; spec and status never share a writer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Phase = Literal["Pending", "Serving", "Progressing", "Degraded", "Failed"]
RolloutStage = Literal["idle", "shadow", "canary", "promoted", "aborted"]
DriftKind = Literal["covariate", "prediction", "label", "concept", "data-quality"]
ConditionType = Literal["Ready", "Progressing", "Degraded", "DriftDetected"]


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Condition(StatusModel):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32_768)
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class RolloutStatus(StatusModel):
    stage: RolloutStage = "idle"
    weight: int = Field(default=0, ge=0, le=100, description="Percent of traffic on candidate.")
    step: int = Field(default=0, ge=0, description="Index into rollout.canary.steps.")
    since: datetime | None = None
    reason: str = ""
    last_analysis: dict[str, Any] | None = Field(
        default=None,
        description="The metrics snapshot and verdict of the latest analysis.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class DriftStatus(StatusModel):
    detected: bool = False
    kind: DriftKind | None = None
    score: float | None = None
    features: list[str] = Field(default_factory=list)
    last_detected_at: datetime | None = None
    reference: str = Field(
        default="",
        max_length=500,
        description="Where the drift monitor's reference comes from: the serving version's "
        "reference sample, or its first live traffic (while collecting, no drift is measured).",
    )


ImportState = Literal["Running", "Succeeded", "Failed"]


class InitialImportStatus(StatusModel):
    """The import Job of `spec.model.initial`, as last seen."""

    job: str = Field(description="The import Job's name.")
    state: ImportState
    message: str = Field(
        default="",
        max_length=2048,
        description="Why it failed (the Job's reason and the import's own last words).",
    )


class DynamicModelStatus(StatusModel):
    phase: Phase = "Pending"
    message: str = ""
    observed_generation: int | None = None
    stable_version: str | None = None
    candidate_version: str | None = None
    baseline_version: str | None = None
    rollout: RolloutStatus = Field(default_factory=RolloutStatus)
    drift: DriftStatus = Field(default_factory=DriftStatus)
    initial_import: InitialImportStatus | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
