"""Pure builders: a validated DynamicModel (and facts about the cluster) -> manifests.

`build_children` is the one entry point the handlers call; every builder it uses
is a plain function of a `BuildContext`, tested against golden files and validated
against the Kubernetes schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftline.operator.builders.context import BuildContext, Capabilities, KafkaAuth
from driftline.operator.builders.initial_import import (
    import_job,
    import_policy,
    import_service_account,
)
from driftline.operator.builders.monitoring import service_monitor
from driftline.operator.builders.network import default_deny, part_policy
from driftline.operator.builders.nodepool import node_pool
from driftline.operator.builders.parts import active_parts
from driftline.operator.builders.scaling import (
    autoscaler,
    pod_disruption_budget,
    trigger_authentication,
)
from driftline.operator.builders.scheduled_retrain import (
    retrain_cron_job,
    retrain_policy,
    retrain_service_account,
)
from driftline.operator.builders.workloads import (
    checkpoint_claim,
    config_map,
    deployment,
    service,
    service_account,
)

__all__ = ["BuildContext", "Capabilities", "Children", "KafkaAuth", "build_children"]


@dataclass(frozen=True)
class Children:
    """Everything one DynamicModel runs as, in the order it is applied."""

    namespaced: list[dict[str, Any]] = field(default_factory=list)
    cluster: list[dict[str, Any]] = field(default_factory=list)  # no owner; deleted by us

    def all(self) -> list[dict[str, Any]]:
        return [*self.namespaced, *self.cluster]


def build_children(ctx: BuildContext) -> Children:
    parts = active_parts(ctx.model)
    out: list[dict[str, Any] | None] = []
    # Identities, config and the network fence first: a pod never starts without them.
    out += [service_account(ctx, p) for p in parts]
    out.append(import_service_account(ctx))
    out.append(retrain_service_account(ctx))
    out.append(config_map(ctx))
    out.append(checkpoint_claim(ctx))
    out.append(default_deny(ctx))
    out += [part_policy(ctx, p) for p in parts]
    out.append(import_policy(ctx))
    out.append(retrain_policy(ctx))
    out += [service(ctx, p) for p in parts]
    out += [deployment(ctx, p) for p in parts]
    out.append(import_job(ctx))  # `spec.model.initial`: version 1 while there is none
    out.append(retrain_cron_job(ctx))  # `training.mode: scheduled`
    out += [pod_disruption_budget(ctx, p) for p in parts]
    out.append(trigger_authentication(ctx))  # before the ScaledObjects that name it
    out += [autoscaler(ctx, p) for p in parts]
    out.append(service_monitor(ctx))
    pool = node_pool(ctx)
    return Children(
        namespaced=[m for m in out if m is not None],
        cluster=[pool] if pool is not None else [],
    )
