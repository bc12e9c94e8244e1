"""A person's rollout decision on a cluster, as an annotation on the DynamicModel.

`driftline rollout approve|abort` queues a command in Redis, which a laptop reaches but
a cluster's users usually do not (and should not write). On a cluster the same
decision is an annotation that `kubectl` can set, with the same RBAC as editing the
model:

    kubectl annotate dynamicmodel churn driftline.io/rollout=approve
    kubectl annotate dynamicmodel churn driftline.io/rollout=abort:7 \\
        driftline.io/rollout-reason="p99 too high on the EU nodes"

`approve` or `abort` is meant for the candidate rolling out when the operator reads
it; `approve:<version>` names the candidate, so an approval written for version 7
never lands on version 8. The operator hands it to the model's rollout driver as the
CLI's command, then removes the annotations; the outcome is in status
(`rollout.stage`, `rollout.reason`) like any decision. A value it cannot read is
removed too, with a warning in the operator's log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from driftline.api.resource import ROLLOUT_ANNOTATION, ROLLOUT_REASON_ANNOTATION
from driftline.rollout.snapshot import Command

ANNOTATION = ROLLOUT_ANNOTATION
REASON_ANNOTATION = ROLLOUT_REASON_ANNOTATION


@dataclass(frozen=True)
class Requested:
    """What the annotations asked: a command, or why they could not be read."""

    command: Command | None
    problem: str = ""


def requested(annotations: Mapping[str, str], candidate: str | None) -> Requested | None:
    """The command the annotations ask for, for the candidate rolling out now (or the
    version they name); None when there is no such annotation."""
    value = annotations.get(ANNOTATION)
    if value is None:
        return None
    action, _, version = value.strip().partition(":")
    if action not in ("approve", "abort"):
        return Requested(
            None,
            f"{ANNOTATION}={value!r}: use approve, abort, approve:<version> or abort:<version>",
        )
    version = version.strip() or (candidate or "")
    if not version:
        return Requested(None, f"{ANNOTATION}={value}: no candidate is rolling out")
    reason = annotations.get(REASON_ANNOTATION, "").strip() or f"{action} by annotation"
    command = Command(
        action="approve" if action == "approve" else "abort", version=version, reason=reason
    )
    return Requested(command)
