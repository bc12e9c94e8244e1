"""The rollout controller: a pure state machine and the thin driver that runs it.

    machine.step(state, snapshot, policy, now) -> Decision(state, actions, transitions)

`machine` decides (no I/O); `driver` reads the snapshot from Redis and MLflow and
carries out the actions (routing table, aliases, control events, the saved state).
The operator calls the driver from a timer; the local runtime runs it as a process
(`python -m driftline.rollout`). `driftline status` reads the saved state with
`read_rollout` and shows it through `status_of`.
"""

from driftline.rollout.actions import Action, DeleteAlias, EmitEvent, SetAlias, SetRouting
from driftline.rollout.analysis import Analysis, Check, analyze
from driftline.rollout.evidence import Evidence, SegmentEvidence, VersionCounters
from driftline.rollout.machine import Decision, step
from driftline.rollout.policy import Policy
from driftline.rollout.rollout_state import RolloutState, Transition, routing_for, status_of
from driftline.rollout.snapshot import Command, DriftSignal, RegistryView, Snapshot
from driftline.rollout.store import RolloutStore, read_rollout

__all__ = [
    "Action",
    "Analysis",
    "Check",
    "Command",
    "Decision",
    "DeleteAlias",
    "DriftSignal",
    "EmitEvent",
    "Evidence",
    "Policy",
    "RegistryView",
    "RolloutState",
    "RolloutStore",
    "SegmentEvidence",
    "SetAlias",
    "SetRouting",
    "Snapshot",
    "Transition",
    "VersionCounters",
    "analyze",
    "read_rollout",
    "routing_for",
    "status_of",
    "step",
]
