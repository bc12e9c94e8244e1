"""What the operator reports in `status`: a pure function of what it observed.

Phase and conditions follow the Kubernetes conventions: `Ready` (every part
available), `Progressing` (a rollout or a rolling update under way), `Degraded`
(it served and now does not, or a rollout was aborted), `DriftDetected` (only
when `spec.drift.onDrift` has `alert`: an alert the user did not ask for is left
out, while `status.drift` always mirrors the drift monitor). A condition's
`lastTransitionTime` moves only when its status changes, so watchers see
transitions, not refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from driftline.api.status import (
    Condition,
    ConditionType,
    DriftStatus,
    DynamicModelStatus,
    InitialImportStatus,
    Phase,
    RolloutStatus,
)
from driftline.operator.cluster import DeploymentState


@dataclass(frozen=True)
class Observation:
    """Everything status is computed from, gathered by the handlers."""

    generation: int | None
    expected_parts: tuple[str, ...] = ()
    deployments: tuple[DeploymentState, ...] = ()
    invalid: str | None = None  # why the spec cannot be used
    waiting_for: str | None = None  # a missing dependency
    rollout: RolloutStatus | None = None
    versions: dict[str, str | None] = field(default_factory=dict)  # stable/candidate/baseline
    drift: DriftStatus | None = None
    drift_alert: bool | None = None
    """`alert` is in `spec.drift.onDrift`; None (a spec that cannot be read): as before."""
    problems: dict[str, str] = field(default_factory=dict)
    """Why an unavailable part is not available (read from its Pods), by part."""
    scaling_note: str | None = None
    """Why a part keeps a replica although `spec.scaling.idle` asks for zero, if any."""
    initial_import: InitialImportStatus | None = None
    """The import Job of `spec.model.initial`, while the spec names one."""


def _parts_summary(obs: Observation) -> tuple[list[str], str]:
    """Parts that are not available, and a `part ready/desired` line for every part."""
    by_part = {d.part: d for d in obs.deployments}
    missing = [p for p in obs.expected_parts if p not in by_part]
    unavailable = missing + [d.part for d in obs.deployments if not d.is_available]

    def state(part: str) -> str:
        if part not in by_part:
            return f"{part} not created"
        why = obs.problems.get(part) if part in unavailable else None
        counts = f"{part} {by_part[part].available}/{by_part[part].desired}"
        return f"{counts} ({why})" if why else counts

    return sorted(set(unavailable)), ", ".join(state(p) for p in obs.expected_parts)


def _named(parts: list[str], problems: dict[str, str]) -> str:
    return ", ".join(f"{p} ({problems[p]})" if p in problems else p for p in parts)


def _condition(
    previous: DynamicModelStatus | None,
    type_: ConditionType,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> Condition:
    value = "True" if status else "False"
    before = previous.condition(type_) if previous is not None else None
    since = before.last_transition_time if before is not None and before.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def compute_status(
    previous: DynamicModelStatus | None, obs: Observation, now: datetime
) -> DynamicModelStatus:
    unavailable, summary = _parts_summary(obs)
    ready = obs.invalid is None and obs.waiting_for is None and not unavailable
    rollout = obs.rollout or (previous.rollout if previous is not None else RolloutStatus())
    drift = obs.drift or (previous.drift if previous is not None else DriftStatus())
    rolling = [d.part for d in obs.deployments if d.is_rolling]
    rollout_active = rollout.stage in ("shadow", "canary")
    served_before = previous is not None and previous.phase in ("Serving", "Progressing")
    was_degraded = previous is not None and previous.phase == "Degraded"

    phase: Phase
    if obs.invalid is not None:
        phase, message = "Failed", obs.invalid
    elif ready:
        phase, message = ("Progressing" if rollout_active else "Serving"), ""
    elif served_before or was_degraded:
        phase = "Degraded"
        message = obs.waiting_for or f"parts unavailable: {_named(unavailable, obs.problems)}"
    else:
        phase, message = (
            "Pending",
            obs.waiting_for or f"waiting for parts: {_named(unavailable, obs.problems)}",
        )

    if obs.invalid is not None:
        ready_reason, ready_message = "InvalidSpec", obs.invalid
    elif obs.waiting_for is not None:
        ready_reason, ready_message = "DependencyMissing", obs.waiting_for
    elif unavailable:
        ready_reason, ready_message = "PartsUnavailable", summary
    else:
        ready_reason, ready_message = "AllPartsAvailable", summary
    if obs.scaling_note and obs.invalid is None:
        ready_message = f"{ready_message}; {obs.scaling_note}"

    if rollout_active:
        progressing = (
            True,
            "RolloutShadow" if rollout.stage == "shadow" else "RolloutCanary",
            f"candidate {obs.versions.get('candidate') or '?'} at {rollout.weight}% "
            f"(step {rollout.step})",
        )
    elif rolling:
        progressing = (True, "RollingUpdate", f"updating: {_named(rolling, obs.problems)}")
    else:
        progressing = (False, "Stable", "")

    stable = obs.versions.get("stable", _prev(previous, "stable_version"))
    failed_import = (
        obs.initial_import is not None
        and obs.initial_import.state == "Failed"
        and stable is None
        and obs.invalid is None
    )
    if failed_import:
        # The parts may all be up, yet there is nothing to serve: say why, and what failed.
        assert obs.initial_import is not None
        phase = "Degraded"
        message = f"the initial model's import failed ({obs.initial_import.job}): " + (
            obs.initial_import.message
        )
        degraded = (True, "InitialImportFailed", message)
    elif phase == "Degraded":
        degraded = (True, "PartsUnavailable", message)
    elif rollout.stage == "aborted":
        degraded = (True, "RolloutAborted", rollout.reason)
    else:
        degraded = (False, "AsExpected", "")

    alert = obs.drift_alert
    if alert is None:
        alert = previous is None or previous.condition("DriftDetected") is not None
    if drift.detected:
        kind = (drift.kind or "input").capitalize()
        features = f" in {', '.join(drift.features)}" if drift.features else ""
        score = f" (score {drift.score:.3g})" if drift.score is not None else ""
        drifting = (True, f"{kind}Drift", f"{drift.kind or 'input'} drift{features}{score}")
    else:
        drifting = (False, "NoDrift", "")

    def cond(type_: ConditionType, value: tuple[bool, str, str]) -> Condition:
        return _condition(previous, type_, value[0], value[1], value[2], now, obs.generation)

    versions = {
        "stable_version": obs.versions.get("stable", _prev(previous, "stable_version")),
        "candidate_version": obs.versions.get("candidate", _prev(previous, "candidate_version")),
        "baseline_version": obs.versions.get("baseline", _prev(previous, "baseline_version")),
    }
    return DynamicModelStatus(
        phase=phase,
        message=message,
        observed_generation=obs.generation,
        rollout=rollout,
        drift=drift,
        initial_import=obs.initial_import,
        conditions=[
            cond("Ready", (ready, ready_reason, ready_message)),
            cond("Progressing", progressing),
            cond("Degraded", degraded),
            *([cond("DriftDetected", drifting)] if alert else []),
        ],
        **versions,
    )


def drift_alert(previous: DynamicModelStatus | None, new: DynamicModelStatus) -> str | None:
    """The message of the `DriftDetected` Warning Event `new` calls for, if any.

    One per drift event the monitor reports (a new `lastDetectedAt`) while the
    `DriftDetected` condition is on, that is while `onDrift` has `alert`.
    """
    condition = new.condition("DriftDetected")
    if condition is None or condition.status != "True":
        return None
    before = previous.condition("DriftDetected") if previous is not None else None
    if (
        before is not None
        and before.status == "True"
        and previous is not None
        and previous.drift.last_detected_at == new.drift.last_detected_at
    ):
        return None  # the same alarm as at the last tick
    return condition.message


def _prev(previous: DynamicModelStatus | None, field_name: str) -> Any:
    return getattr(previous, field_name) if previous is not None else None


def to_patch(status: DynamicModelStatus) -> dict[str, Any]:
    """The status as a JSON merge patch: camelCase; unset fields written as null (cleared).

    A null clears a field of an object, but a list is replaced whole: a null inside
    one of its items would be stored as null, then pruned by the API server, and the
    stored status would never equal the patch. Items of lists leave unset fields out.
    """
    patch: dict[str, Any] = status.model_dump(by_alias=True, mode="json", exclude_none=False)
    cleaned: dict[str, Any] = _without_nulls_in_lists(patch)
    return cleaned


def _without_nulls_in_lists(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_nulls_in_lists(v, in_list)
            for k, v in value.items()
            if not (in_list and v is None)
        }
    if isinstance(value, list):
        return [_without_nulls_in_lists(item, in_list=True) for item in value]
    return value


def parse_status(raw: dict[str, Any] | None) -> DynamicModelStatus | None:
    """The status as stored, or None when it is missing or was written by someone else."""
    if not raw:
        return None
    known = {k: v for k, v in raw.items() if k in DynamicModelStatus.model_fields or k in _ALIASES}
    try:
        return DynamicModelStatus.model_validate(known)
    except ValueError:
        return None


_ALIASES = {f.alias for f in DynamicModelStatus.model_fields.values() if f.alias}
