"""Why a part has no available replica, in one line a user can act on.

A Deployment says only "0/1 available". The reason is on its Pods (not scheduled:
`Insufficient cpu`, an unbound claim; an image that cannot be pulled; a container
that crashes, killed at its memory limit) and on the trainer's checkpoint claim
(Pending on a cluster without a default StorageClass). A pure function of the Pods
and claims the operator listed, so that status stays a function of what it saw.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from driftline.operator.builders.context import COMPONENT_LABEL

# Waiting reasons that will not clear by themselves; a container that is only
# starting (ContainerCreating, PodInitializing) is not a problem yet.
STUCK_WAITING = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
MAX_MESSAGE = 200


def pod_problem(pod: dict[str, Any]) -> str | None:
    """What keeps this Pod from being ready, or None while it is only on its way."""
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return None  # going away: its successor tells the story
    limits = {
        c["name"]: (c.get("resources") or {}).get("limits", {}).get("memory")
        for c in (pod.get("spec") or {}).get("containers", [])
    }
    containers = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
    for container in containers:
        name = container.get("name", "?")
        waiting = (container.get("state") or {}).get("waiting") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") not in STUCK_WAITING:
            continue
        reason = waiting["reason"]
        if reason == "CrashLoopBackOff" and last:
            return _crash(name, last, limits.get(name), container.get("restartCount", 0))
        return _short(f"{name}: {reason}: {waiting.get('message', '')}".rstrip(": "))
    for condition in status.get("conditions", []):
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return _short(f"{reason}: {condition.get('message', '')}".rstrip(": "))
    return None


def _crash(name: str, last: dict[str, Any], limit: str | None, restarts: int) -> str:
    reason = last.get("reason") or "Error"
    if reason == "OOMKilled":
        at = f" at its memory limit {limit}" if limit else ""
        return f"{name}: OOMKilled{at} ({restarts} restarts): raise the part's memory limit"
    code = last.get("exitCode")
    return _short(
        f"{name}: CrashLoopBackOff, last exit {reason} (code {code}, {restarts} restarts)"
    )


def claim_problem(claim: dict[str, Any]) -> str | None:
    """A claim that is not bound: the part that mounts it cannot be scheduled."""
    phase = (claim.get("status") or {}).get("phase")
    if phase in (None, "Bound"):
        return None
    name = claim.get("metadata", {}).get("name", "?")
    storage_class = (claim.get("spec") or {}).get("storageClassName")
    if storage_class is None:
        where = "no storageClassName (the cluster's default StorageClass, if it has one)"
    elif storage_class == "":
        where = 'storageClassName "" (a statically provisioned volume, none matches)'
    else:
        where = f"StorageClass {storage_class}"
    return (
        f"PersistentVolumeClaim {name} is {phase}: {where}; set the operator setting "
        "trainer_storage_class, or trainer_checkpoints: ephemeral"
    )


def part_problems(
    pods: Iterable[dict[str, Any]],
    claims: Iterable[dict[str, Any]],
    parts: Iterable[str],
    claim_part: str = "trainer",
) -> dict[str, str]:
    """One line per part in `parts` whose Pods show a problem; the first one found."""
    wanted = set(parts)
    found: dict[str, str] = {}
    if claim_part in wanted:
        for claim in claims:
            problem = claim_problem(claim)
            if problem is not None:
                found[claim_part] = problem
                break
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        part = pod.get("metadata", {}).get("labels", {}).get(COMPONENT_LABEL)
        if part not in wanted or part in found:
            continue
        problem = pod_problem(pod)
        if problem is not None:
            found[part] = problem
    return found


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
