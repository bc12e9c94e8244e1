"""Who sets each part's replica count: an HPA, a KEDA ScaledObject, or the Deployment.

Inference scales with an HPA on the spec's metric (CPU, GPU utilisation from NVIDIA's
DCGM exporter, in-flight requests or request rate per pod; the last three through a
custom metrics adapter such as prometheus-adapter). The joiner and the drift monitor
scale with Kafka consumer lag through KEDA when its CRDs are installed, else with an
HPA on CPU; neither goes beyond the topic's partitions, since a consumer without a
partition idles. The trainer is one replica (see `driftline.api.parts`).

`spec.scaling.idle` lets parts scale to zero while nothing arrives: joiner, drift
monitor and trainer through KEDA ScaledObjects with `minReplicaCount: 0` (the
trainer's with a maximum of one), inference only through KEDA's HTTP add-on, whose
interceptor holds requests while the first pod starts. What cannot scale to zero
keeps its minimum, and `idle_scaling_note` says why in the Ready condition.
`spec.cost.maxGpus` caps inference's maximum replicas at the GPUs it may hold.

When an autoscaler exists the Deployment leaves `replicas` out, so server-side apply
never takes that field back from the autoscaler.
"""

from __future__ import annotations

import copy
from typing import Any

from driftline.api.parts import INFERENCE, JOINER, TRAINER, Part
from driftline.api.spec import IdleSpec, split_servers
from driftline.operator.builders.context import (
    BuildContext,
    child_name,
    metadata,
    model_labels,
    part_labels,
    part_selector,
    quantity,
)
from driftline.operator.builders.parts import topic, trainer_ranks

HPA_API = "autoscaling/v2"
KEDA_API = "keda.sh/v1alpha1"
KEDA_HTTP_API = "http.keda.sh/v1alpha1"
DEFAULT_COOLDOWN_SECONDS = 300

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


def worker_max_replicas(ctx: BuildContext, part: Part = JOINER) -> int:
    return 1 if part.singleton else ctx.model.spec.kafka.partitions


def inference_max_replicas(ctx: BuildContext) -> int:
    """replicas.max, capped so that the pods never hold more than `cost.maxGpus` GPUs.

    The spec refuses a cap below replicas.min x gpu, so the cap never starves the minimum.
    """
    high = ctx.model.spec.inference.replicas.max
    cap = ctx.model.spec.cost.max_gpus
    if cap is not None and ctx.gpu:
        high = min(high, max(1, cap // ctx.gpu))
    return high


def scales_to_zero(ctx: BuildContext, part: Part) -> bool:
    """Whether this part goes to zero replicas when idle, in this cluster."""
    if ctx.model.spec.scaling.idle is None:
        return False
    if part is INFERENCE:
        return ctx.capabilities.keda_http
    if part is TRAINER and trainer_ranks(ctx.model) > 1:
        return False  # a group of ranks runs whole or not at all
    return ctx.capabilities.keda and bool(part.consumes)


def idle_scaling_note(ctx: BuildContext) -> str | None:
    """Why a part keeps a replica although `spec.scaling.idle` asks for zero, if any."""
    if ctx.model.spec.scaling.idle is None:
        return None
    if not ctx.capabilities.keda:
        return (
            "spec.scaling.idle is set but KEDA is not installed: every part keeps at "
            "least one replica"
        )
    if not ctx.capabilities.keda_http:
        return (
            "idle joiner, drift and trainer scale to zero; inference keeps "
            f"{max(1, ctx.model.spec.inference.replicas.min)} replica(s): scaling it to "
            "zero needs KEDA's HTTP add-on (HTTPScaledObject)"
        )
    return None


def fixed_replicas(ctx: BuildContext, part: Part) -> int | None:
    """The replica count the Deployment states; None when an autoscaler owns it."""
    if scales_to_zero(ctx, part):
        return None
    if part is INFERENCE:
        low = ctx.model.spec.inference.replicas.min
        return low if low == inference_max_replicas(ctx) else None
    if part is TRAINER:
        return trainer_ranks(ctx.model)
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
            "behavior": hpa_behavior(ctx, part),
        },
    }


def hpa_behavior(ctx: BuildContext, part: Part) -> dict[str, Any]:
    """`HPA_BEHAVIOR`; inference gives pods back after its spec's `scaleDownSeconds`."""
    behavior = copy.deepcopy(HPA_BEHAVIOR)
    if part.name == "inference":
        window = ctx.model.spec.inference.autoscaling.scale_down_seconds
        behavior["scaleDown"]["stabilizationWindowSeconds"] = window
    return behavior


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
    idle = ctx.model.spec.scaling.idle if scales_to_zero(ctx, part) else None
    has_auth_object = trigger_authentication(ctx) is not None
    triggers = []
    for kind in part.consumes:
        meta: dict[str, str] = {
            "bootstrapServers": ",".join(split_servers(ctx.model.spec.kafka.bootstrap_servers)),
            "consumerGroup": part.group_id(ctx.name),
            "topic": topic(ctx.model, kind),
            "lagThreshold": str(ctx.settings.lag_threshold),
        }
        if idle is not None:
            # Any lag wakes a part at zero. A group with no committed offset yet (a new
            # model) counts as lag, so one consumer starts, joins and commits first.
            meta |= {
                "activationLagThreshold": "0",
                "offsetResetPolicy": "earliest",  # as the parts' consumers reset
                "scaleToZeroOnInvalidOffset": "false",
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
            "minReplicaCount": 0 if idle is not None else 1,
            "maxReplicaCount": worker_max_replicas(ctx, part),
            "pollingInterval": 15,
            # Only the step to zero waits this long; between 1 and max the HPA decides.
            "cooldownPeriod": idle.after_seconds if idle else DEFAULT_COOLDOWN_SECONDS,
            "triggers": triggers,
        },
    }


def http_scaled_object(ctx: BuildContext, idle: IdleSpec) -> dict[str, Any]:
    """Inference through KEDA's HTTP add-on: its interceptor counts and holds requests.

    Clients call the add-on's interceptor Service with the model's Service name as the
    Host header; the interceptor wakes the Deployment from zero and forwards. The
    add-on makes its own ScaledObject, so no HPA exists for inference then.
    """
    name = child_name(ctx.name, INFERENCE.name)
    inference = ctx.model.spec.inference
    metric: dict[str, Any]
    if inference.autoscaling.metric == "rps":
        metric = {
            "requestRate": {
                "targetValue": round(inference.autoscaling.target),
                "window": "1m",
                "granularity": "1s",
            }
        }
    else:
        # In-flight requests per pod: the spec's target, else one full batch per pod.
        target = (
            inference.autoscaling.target
            if inference.autoscaling.metric == "inflight"
            else inference.batching.max_batch_size
        )
        metric = {"concurrency": {"targetValue": max(1, round(target))}}
    service = f"{name}.{ctx.namespace}"
    return {
        "apiVersion": KEDA_HTTP_API,
        "kind": "HTTPScaledObject",
        "metadata": metadata(ctx, name, part_labels(ctx, INFERENCE.name)),
        "spec": {
            "hosts": [name, service, f"{service}.svc", f"{service}.svc.cluster.local"],
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "service": name,
                "port": ctx.settings.inference_port,
            },
            "replicas": {"min": 0, "max": inference_max_replicas(ctx)},
            "scaledownPeriod": idle.after_seconds,
            "scalingMetric": metric,
        },
    }


def autoscaler(ctx: BuildContext, part: Part) -> dict[str, Any] | None:
    """The one object that sets this part's replicas, or None when they are fixed."""
    if fixed_replicas(ctx, part) is not None:
        return None
    if part is INFERENCE:
        idle = ctx.model.spec.scaling.idle
        if idle is not None and scales_to_zero(ctx, part):
            return http_scaled_object(ctx, idle)
        low = ctx.model.spec.inference.replicas.min
        return _hpa(ctx, part, low, inference_max_replicas(ctx), inference_metric(ctx))
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
