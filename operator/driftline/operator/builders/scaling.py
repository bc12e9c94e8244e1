"""Who sets each part's replica count: an HPA, a KEDA ScaledObject, or the Deployment.

Inference scales with an HPA on the spec's metric (CPU, GPU utilisation from NVIDIA's
DCGM exporter, in-flight requests or request rate per pod; the last three through a
custom metrics adapter such as prometheus-adapter). The joiner and the drift monitor
scale with Kafka consumer lag through KEDA when its CRDs are installed, else with an
HPA on CPU; neither goes beyond the topic's partitions, since a consumer without a
partition idles. The trainer is one replica (see `driftline.api.parts`).

When an autoscaler exists the Deployment leaves `replicas` out, so server-side apply
never takes that field back from the autoscaler.
"""

from __future__ import annotations

import copy
from typing import Any

from driftline.api.parts import INFERENCE, Part
from driftline.api.spec import split_servers
from driftline.operator.builders.context import (
    BuildContext,
    child_name,
    metadata,
    model_labels,
    part_labels,
    part_selector,
    quantity,
)
from driftline.operator.builders.parts import topic

HPA_API = "autoscaling/v2"
KEDA_API = "keda.sh/v1alpha1"

# React to load within a scrape or two; give capacity back slowly (model loads are costly).
HPA_BEHAVIOR: dict[str, Any] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
    },
}


def worker_max_replicas(ctx: BuildContext) -> int:
    return ctx.model.spec.kafka.partitions


def fixed_replicas(ctx: BuildContext, part: Part) -> int | None:
    """The replica count the Deployment states; None when an autoscaler owns it."""
    if part is INFERENCE:
        replicas = ctx.model.spec.inference.replicas
        return replicas.min if replicas.min == replicas.max else None
    if part.singleton or worker_max_replicas(ctx) <= 1:
        return 1
    return None


def _pods_metric(name: str, target: float) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": quantity(target)},
        },
    }


def _cpu_metric(percent: float) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": round(percent)},
        },
    }


def inference_metric(ctx: BuildContext) -> dict[str, Any]:
    autoscaling = ctx.model.spec.inference.autoscaling
    settings = ctx.settings
    if autoscaling.metric == "cpu":
        return _cpu_metric(autoscaling.target)
    by_metric = {
        "gpu": settings.gpu_metric,
        "inflight": settings.inflight_metric,
        "rps": settings.rps_metric,
    }
    return _pods_metric(by_metric[autoscaling.metric], autoscaling.target)


def _hpa(
    ctx: BuildContext, part: Part, low: int, high: int, metric: dict[str, Any]
) -> dict[str, Any]:
    name = child_name(ctx.name, part.name)
    return {
        "apiVersion": HPA_API,
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(ctx, name, part_labels(ctx, part.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            # An HPA cannot hold a Deployment at zero; replicas.min 0 runs one pod.
            "minReplicas": max(1, low),
            "maxReplicas": high,
            "metrics": [metric],
            "behavior": copy.deepcopy(HPA_BEHAVIOR),
        },
    }


def trigger_authentication_name(ctx: BuildContext) -> str:
    return child_name(ctx.name, "kafka")


def trigger_authentication(ctx: BuildContext) -> dict[str, Any] | None:
    """How KEDA reads the Kafka credentials: by reference to the Secret's keys."""
    auth = ctx.kafka_auth
    if not ctx.capabilities.keda or auth is None:
        return None
    refs = []
    if auth.sasl:
        refs += [
            {"parameter": "username", "name": auth.secret, "key": "username"},
            {"parameter": "password", "name": auth.secret, "key": "password"},
        ]
    if auth.has_ca:
        refs.append({"parameter": "ca", "name": auth.secret, "key": "ca.crt"})
    if not refs:
        return None
    return {
        "apiVersion": KEDA_API,
        "kind": "TriggerAuthentication",
        "metadata": metadata(ctx, trigger_authentication_name(ctx), model_labels(ctx)),
        "spec": {"secretTargetRef": refs},
    }


def scaled_object(ctx: BuildContext, part: Part) -> dict[str, Any]:
    name = child_name(ctx.name, part.name)
    auth = ctx.kafka_auth
    has_auth_object = trigger_authentication(ctx) is not None
    triggers = []
    for kind in part.consumes:
        meta: dict[str, str] = {
            "bootstrapServers": ",".join(split_servers(ctx.model.spec.kafka.bootstrap_servers)),
            "consumerGroup": part.group_id(ctx.name),
            "topic": topic(ctx.model, kind),
            "lagThreshold": str(ctx.settings.lag_threshold),
        }
        if auth is not None and auth.sasl:
            meta["sasl"] = auth.sasl
        if auth is not None and auth.tls:
            meta["tls"] = "enable"
        trigger: dict[str, Any] = {"type": "kafka", "name": kind, "metadata": meta}
        if has_auth_object:
            trigger["authenticationRef"] = {"name": trigger_authentication_name(ctx)}
        triggers.append(trigger)
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": metadata(ctx, name, part_labels(ctx, part.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": 1,
            "maxReplicaCount": worker_max_replicas(ctx),
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": triggers,
        },
    }


def autoscaler(ctx: BuildContext, part: Part) -> dict[str, Any] | None:
    """The one object that sets this part's replicas, or None when they are fixed."""
    if fixed_replicas(ctx, part) is not None:
        return None
    if part is INFERENCE:
        replicas = ctx.model.spec.inference.replicas
        return _hpa(ctx, part, replicas.min, replicas.max, inference_metric(ctx))
    if ctx.capabilities.keda:
        return scaled_object(ctx, part)
    metric = _cpu_metric(ctx.settings.worker_cpu_utilization)
    return _hpa(ctx, part, 1, worker_max_replicas(ctx), metric)


def pod_disruption_budget(ctx: BuildContext, part: Part) -> dict[str, Any]:
    """Voluntary evictions (node drains, upgrades) take one pod of a part at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ctx, child_name(ctx.name, part.name), part_labels(ctx, part.name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": part_selector(ctx, part.name)},
            # A crash-looping pod must not block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
