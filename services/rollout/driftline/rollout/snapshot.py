"""What the driver saw on one tick: the machine's only view of the world.

A snapshot is plain data, read by the driver from the registry (MLflow aliases) and
the metrics source (Redis), so the state machine stays free of I/O and its tests
build snapshots by hand. A source that could not be read says so: `registry` is
None when the aliases are unknown, `metrics_error` names the failure of the metrics
source.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from driftline.common.redis_state import AccuracyEstimate
from driftline.rollout.evidence import Evidence
from driftline.rollout.guard import GuardEvidence


class RegistryView(msgspec.Struct, frozen=True, kw_only=True):
    """The model's aliases in the registry (`driftline.api.artifacts`)."""

    champion: str | None = None
    candidate: str | None = None
    baseline: str | None = None


class DriftSignal(msgspec.Struct, frozen=True, kw_only=True):
    """The latest drift event the drift monitor recorded for this model."""

    event_id: str
    detected_at: float
    kind: str
    model_version: str


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """An explicit decision by a person: approve the next step, or abort.

    `version` names the candidate it is meant for; a command for another version is
    ignored, so an approval never lands on a candidate nobody looked at.
    """

    action: Literal["approve", "abort"]
    version: str | None = None
    reason: str = ""


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    registry: RegistryView | None = None
    """None: the registry could not be read this tick (nothing is learned from it)."""
    evidence: Evidence | None = None
    """Cumulative counters since the rollout began (read only while one runs)."""
    metrics_error: str | None = None
    """Set when the metrics source failed: a running rollout aborts, none starts."""
    drift: DriftSignal | None = None
    command: Command | None = None
    guard: GuardEvidence | None = None
    """Counters since the promotion (read only while a guard window runs)."""
    estimates: dict[str, AccuracyEstimate] = msgspec.field(default_factory=dict)
    """Accuracy estimated from confidence per version (read only while a candidate is
    under test and `analysis.estimate` is set)."""
