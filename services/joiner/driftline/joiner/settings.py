"""The joiner's settings: the DynamicModel plus a few knobs for batching and recovery.

Built once by `python -m driftline.joiner` from `DRIFTLINE_JOINER_*` variables and
passed down. The join window itself is not a setting: it is the model's
`spec.feedback.joinWindowSeconds`, so every replica and the rollout analysis agree.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftline.common.settings import PartSettings


class JoinerSettings(PartSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_JOINER_", extra="ignore", frozen=True)

    batch_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most records read per `consume` call. One batch is one Redis script "
        "per phase: larger batches amortise round trips, but Redis spends more per "
        "record on the script's larger tables past about a thousand (measured in "
        "benchmarks/feedback).",
    )
    poll_timeout_seconds: float = Field(
        default=0.2, gt=0, le=10, description="How long one `consume` call waits for records."
    )
    grace_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long state outlives the join window, so that a late arrival is "
        "recognised as late (counted, dead-lettered) rather than as a new request. "
        "Default: 10% of the window, at least 30 s, at most one hour.",
    )
    sweep_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often requests past their window are counted as expired.",
    )
    agreement_tolerance: float = Field(
        default=0.01,
        ge=0,
        description="Regression only: two outputs agree when they differ by at most this "
        "fraction of the larger one. Classification compares class indices.",
    )
    fairness_interval_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="How often the gauges summed from Redis are refreshed: the fairness "
        "gaps of protected segments (binary classification) and calibration "
        "(classification).",
    )
    retry_backoff_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Pause before a batch is retried after Redis or the broker failed.",
    )

    commit_interval_seconds: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="Most often the consumed offsets are committed (besides on a rebalance, "
        "when idle and at exit). A crash replays at most this much, which the outboxes make "
        "harmless; fewer commits cost the broker and the client less.",
    )
    stall_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A partition behind its end that has not moved for this long means "
        "the consumer is stuck: it is started afresh (counted in "
        "driftline_joiner_consumer_restarts_total).",
    )

    def grace(self, window_seconds: float) -> float:
        """The grace period after a window of `window_seconds`."""
        if self.grace_seconds is not None:
            return self.grace_seconds
        return min(max(0.1 * window_seconds, 30.0), 3600.0)
