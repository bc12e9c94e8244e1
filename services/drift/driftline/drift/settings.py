"""Settings of the drift monitor process (`DRIFTLINE_DRIFT_*`), built once in `__main__`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from driftline.common.settings import PartSettings
from driftline.drift.monitor_config import MonitorConfig


class DriftSettings(PartSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_DRIFT_", extra="ignore", frozen=True)

    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Records per consume().")
    poll_seconds: float = Field(default=0.5, gt=0, le=10, description="Longest wait per consume().")
    reference_refresh_seconds: float = Field(
        default=10, gt=0, description="How often to check which version serves (and its reference)."
    )
    estimate_interval_seconds: float = Field(
        default=15,
        gt=0,
        description="How often the accuracy estimated from confidence (classification) is "
        "computed and exported.",
    )
    live_reference_rows: int = Field(
        default=1000,
        ge=50,
        description="Predictions of the serving version taken as the reference when it was "
        "registered without one (an import without a sample).",
    )
    reference_max_rows: int = Field(
        default=2000, ge=50, description="Reference rows kept (a random subset of larger samples)."
    )
    correction: Literal["bonferroni", "fdr"] = Field(
        default="bonferroni", description="Multiple-testing correction over the features."
    )
    mmd_window: int = Field(default=20, ge=2, le=1000, description="Sliding window of online MMD.")
    online_windows: list[Annotated[int, Field(ge=2)]] | None = Field(
        default=None,
        max_length=6,
        description="Window sizes of online CVM and the concept detector; "
        "default: 1/20, 1/5 and 1/2 of spec.drift.window.",
    )
    concept_reference: int | None = Field(
        default=None,
        ge=20,
        description="Labeled examples that form the error reference; "
        "default: the larger of spec.drift.window and 4 x the longest online window.",
    )
    threshold_cache_dir: Path | None = Field(
        default=Path(tempfile.gettempdir()) / "driftline-drift-thresholds",
        description="Where simulated thresholds of online detectors are kept; unset turns it off.",
    )
    seed: int = Field(default=0, description="Seed of threshold simulations and subsampling.")
    threads: int = Field(
        default=1, ge=1, le=64, description="torch / numba threads of the alibi backend."
    )

    @model_validator(mode="after")
    def _windows_fit(self) -> DriftSettings:
        windows, reference = self.online_windows, self.concept_reference
        if windows and reference and reference < 2 * max(windows):
            raise ValueError(
                f"concept_reference ({reference}) must be at least twice the "
                f"longest online window ({max(windows)})"
            )
        return self

    def monitor_config(self) -> MonitorConfig:
        return MonitorConfig.from_spec(
            self.model.spec.drift,
            correction=self.correction,
            mmd_window=self.mmd_window,
            online_windows=self.online_windows,
            concept_reference=self.concept_reference,
        )
