"""Settings of the rollout controller process (`python -m driftline.rollout`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftline.common.settings import PartSettings


class RolloutSettings(PartSettings):
    """`DRIFTLINE_ROLLOUT_MODEL_FILE` and the endpoint overrides, plus the tick."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_ROLLOUT_", extra="ignore", frozen=True)

    tick_seconds: float = Field(
        default=1.0,
        gt=0,
        le=300,
        description="How often the controller reads metrics and decides. Keep it well "
        "below rollout.canary.stepSeconds: a step ends on the first tick after its hold.",
    )
    redis_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="Socket timeout of Redis calls within a tick."
    )
    registry_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="HTTP timeout of MLflow calls within a tick."
    )
    registry_retries: int = Field(
        default=1,
        ge=0,
        le=10,
        description="MLflow client retries per call; the next tick retries anyway.",
    )
