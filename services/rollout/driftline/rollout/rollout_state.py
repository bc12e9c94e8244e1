"""The rollout state: where a model's rollout stands, and what it means for serving.

The state is plain, frozen data. The driver keeps it in Redis (`rollout_key`) so a
restarted driver resumes where the last one stopped, and `status_of` maps it onto
`DynamicModel.status.rollout` for the operator and `driftline status`.

`routing_for` derives the routing table from the state alone, so routing can
never disagree with the stage: at rest (idle, promoted, aborted) the stable version
serves everything and no candidate is named; in shadow the candidate is scored
beside it; in a canary step it serves the step's share. During a promotion's guard
window the previous champion is scored in shadow beside the new stable version.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from driftline.api.events import RolloutEvent
from driftline.api.status import RolloutStage, RolloutStatus
from driftline.rollout.actions import SetRouting
from driftline.rollout.analysis import Analysis
from driftline.rollout.evidence import Evidence
from driftline.rollout.guard import GuardWindow

ACTIVE: tuple[RolloutStage, ...] = ("shadow", "canary")
"""Stages in which a candidate is under test."""

HISTORY_LIMIT = 50
DECIDED_LIMIT = 64


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the history: a change of stage (or step), and why."""

    at: float
    from_stage: RolloutStage
    to_stage: RolloutStage
    stable: str | None
    candidate: str | None
    """The candidate the transition concerns (also when it was just promoted or aborted)."""
    weight: int
    reason: str

    def event(self, model: str) -> RolloutEvent:
        return RolloutEvent(
            model=model,
            stage=self.to_stage,
            previous_stage=self.from_stage,
            stable_version=self.stable,
            candidate_version=self.candidate,
            weight=self.weight,
            reason=self.reason,
            at=self.at,
        )


class RolloutState(msgspec.Struct, frozen=True, kw_only=True):
    stage: RolloutStage = "idle"
    stable: str | None = None
    candidate: str | None = None
    baseline: str | None = None
    weight: int = 0
    """Percent of traffic on the candidate (canary); 0 otherwise."""
    step: int = 0
    """Index into `rollout.canary.steps` while in canary."""
    since: float = 0.0
    """When the current stage (or canary step) began."""
    reason: str = ""
    started_at: float | None = None
    """When the running rollout began: the driver reads counters from here on."""
    canary_since: float | None = None
    """When the running rollout entered its first canary step (drift rollback)."""
    step_base: Evidence = msgspec.field(default_factory=Evidence)
    """Cumulative counters when the current stage began; the step judges what came after."""
    seen: Evidence = msgspec.field(default_factory=Evidence)
    """Cumulative counters of the previous tick (counts going down mean lost data)."""
    stable_quality: float | None = None
    """The stable version's latest quality measured in this rollout."""
    stable_segments: dict[str, float] = msgspec.field(default_factory=dict)
    """The same per segment value (`country=FR`), when the worst segment is judged."""
    approved: bool = False
    """Manual strategy: a person approved advancing past the current stage."""
    last_analysis: Analysis | None = None
    decided: tuple[str, ...] = ()
    """Candidates already promoted, aborted or superseded: never rolled out again."""
    history: tuple[Transition, ...] = ()
    guard: GuardWindow | None = None
    """The guard of the latest promotion while its window runs (`guard` module)."""

    @property
    def active(self) -> bool:
        return self.stage in ACTIVE


def routing_for(state: RolloutState) -> SetRouting:
    """The routing table this state means (without revision)."""
    if state.stage == "shadow" and state.candidate is not None:
        return SetRouting(
            stable=state.stable,
            candidate=state.candidate,
            baseline=state.baseline,
            mode="shadow",
        )
    if state.stage == "canary" and state.candidate is not None:
        return SetRouting(
            stable=state.stable,
            candidate=state.candidate,
            baseline=state.baseline,
            mode="canary",
            weight=state.weight,
        )
    if state.stage == "promoted" and state.guard is not None:
        # The previous champion scored in shadow beside the new one, never served.
        return SetRouting(
            stable=state.stable,
            candidate=state.guard.previous,
            baseline=state.baseline,
            mode="shadow",
        )
    return SetRouting(stable=state.stable, baseline=state.baseline)


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def status_of(state: RolloutState) -> RolloutStatus:
    """`DynamicModel.status.rollout` for this state."""
    return RolloutStatus(
        stage=state.stage,
        weight=state.weight,
        step=state.step,
        since=_utc(state.since),
        reason=state.reason,
        last_analysis=msgspec.to_builtins(state.last_analysis) if state.last_analysis else None,
    )


_state_decoder = msgspec.json.Decoder(RolloutState)


def encode_state(state: RolloutState) -> bytes:
    return msgspec.json.encode(state)


def decode_state(data: bytes | str) -> RolloutState:
    return _state_decoder.decode(data)
