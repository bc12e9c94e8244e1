"""What a model's pods tell cost tools, and where its trainer may run cheaply.

Kubecost and OpenCost allocate spend by pod labels: every pod carries its model,
its part and, when set, the team that pays (`spec.cost.team`; not the model's own
labels, whose every change would then roll every pod). The chart's cost recording
rules read the same labels through kube-state-metrics' `kube_pod_labels`.

`spec.cost.spotTrainer` puts the trainer on spot capacity where Karpenter launches
nodes: a reclaim sends SIGTERM, the trainer stops within its grace period and the
next pod resumes from the checkpoint and the committed offsets, so nothing learned
is lost or learned twice. Inference stays on demand (a reclaim would drop requests).
"""

from __future__ import annotations

from typing import Any

from driftline.api.parts import TRAINER, Part
from driftline.operator.builders.context import MODEL_LABEL, BuildContext

TEAM_LABEL = "driftline.io/team"
PART_LABEL = "driftline.io/part"
# Which pods the cost rules price at the spot discount.
CAPACITY_LABEL = "driftline.io/capacity-type"
CAPACITY_TYPE = "karpenter.sh/capacity-type"
# A spot pool tainted so that only pods that accept reclaims land there.
SPOT_TOLERATION = {
    "key": CAPACITY_TYPE,
    "operator": "Equal",
    "value": "spot",
    "effect": "NoSchedule",
}


def team(ctx: BuildContext) -> str | None:
    return ctx.model.spec.cost.team


def cost_labels(ctx: BuildContext, part: Part) -> dict[str, str]:
    """The labels cost allocation groups a pod by: model, part, team (and spot)."""
    labels = {MODEL_LABEL: ctx.name, PART_LABEL: part.name}
    owner = team(ctx)
    if owner:
        labels[TEAM_LABEL] = owner
    if runs_on_spot(ctx, part):
        labels[CAPACITY_LABEL] = "spot"
    return labels


def runs_on_spot(ctx: BuildContext, part: Part) -> bool:
    """Spot only where asked, for the trainer, and where Karpenter labels the nodes."""
    return part is TRAINER and ctx.model.spec.cost.spot_trainer and ctx.capabilities.karpenter


def spot_scheduling(ctx: BuildContext, part: Part) -> dict[str, Any]:
    """nodeSelector and toleration that put a part on spot nodes, or nothing."""
    if not runs_on_spot(ctx, part):
        return {}
    return {"nodeSelector": {CAPACITY_TYPE: "spot"}, "tolerations": [dict(SPOT_TOLERATION)]}
