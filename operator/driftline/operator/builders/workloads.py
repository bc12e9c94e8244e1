"""ConfigMap, ServiceAccount, Deployment and Service of each part."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from driftline.api.parts import INFERENCE, TRAINER, Part
from driftline.operator.builders.context import (
    BuildContext,
    child_name,
    metadata,
    model_labels,
    part_labels,
    part_selector,
)
from driftline.operator.builders.parts import active_parts, trainer_ranks
from driftline.operator.builders.pods import (
    MODEL_FILE_NAME,
    RENDEZVOUS_PORT,
    checkpoint_claim_name,
    config_map_name,
    pod_template,
)
from driftline.operator.builders.scaling import fixed_replicas


def model_file(ctx: BuildContext) -> str:
    """The DynamicModel as the parts read it: the validated spec with its defaults."""
    manifest = ctx.model.to_manifest()
    document = {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": {"name": ctx.name, "namespace": ctx.namespace},
        "spec": manifest["spec"],
    }
    return yaml.safe_dump(document, sort_keys=True)


# Spec fields no part reads from the model file, so they stay out of the pods' config
# hash: what only shapes Kubernetes objects (the inference Deployment's replica bounds,
# its HPA, its resources and node pool; what reaches a pod template, such as resources
# or a node selector, rolls that one Deployment by itself), and the rollout's policy,
# which the operator runs (inference reads only `rollout.stickyKey`). Changing the
# autoscaler's bounds or a canary's steps restarts no pod.
NOT_READ_BY_PARTS = (
    ("inference", "replicas"),
    ("inference", "autoscaling"),
    ("inference", "resources"),
    ("inference", "nodePool"),
    ("scaling", "idle"),
    ("cost", "team"),
    ("cost", "maxGpus"),
    ("cost", "spotTrainer"),
    ("cost", "monthlyBudget"),
    ("rollout", "strategy"),
    ("rollout", "shadow"),
    ("rollout", "canary"),
    ("rollout", "analysis"),
    ("rollout", "guard"),
)


def config_hash(ctx: BuildContext) -> str:
    """What the parts read from the model file, hashed: a change rolls their pods.

    Fields left at their defaults are left out, so an operator release that adds a
    spec field with a default rolls no pod: the parts fill the same default in."""
    spec = ctx.model.spec.model_dump(
        by_alias=True, exclude_none=True, exclude_defaults=True, mode="json"
    )
    for section, field in NOT_READ_BY_PARTS:
        spec.get(section, {}).pop(field, None)
    document = {"metadata": {"name": ctx.name, "namespace": ctx.namespace}, "spec": spec}
    text = yaml.safe_dump(_without_empty(document), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_empty(value: Any) -> Any:
    """`value` with every mapping that holds nothing (after the above) left out."""
    if not isinstance(value, dict):
        return value
    kept = {key: _without_empty(item) for key, item in value.items()}
    return {key: item for key, item in kept.items() if item != {}}


def config_map(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ctx, config_map_name(ctx), model_labels(ctx)),
        "data": {MODEL_FILE_NAME: model_file(ctx)},
    }


def service_account(ctx: BuildContext, part: Part) -> dict[str, Any]:
    """One identity per part, so a cloud role (IRSA, Workload Identity) can be bound to it."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(ctx, child_name(ctx.name, part.name), part_labels(ctx, part.name)),
        "automountServiceAccountToken": False,
    }


def checkpoint_claim(ctx: BuildContext) -> dict[str, Any] | None:
    """The trainer's checkpoint volume: its state survives a restart or a move."""
    if TRAINER not in active_parts(ctx.model) or ctx.settings.trainer_checkpoints != "persistent":
        return None
    if trainer_ranks(ctx.model) > 1:
        return None  # the ranks' StatefulSet claims one volume per rank itself
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(ctx, checkpoint_claim_name(ctx), part_labels(ctx, TRAINER.name)),
        "spec": _claim_spec(ctx),
    }


def _claim_spec(ctx: BuildContext) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],  # one trainer at a time (Recreate)
        "resources": {"requests": {"storage": ctx.settings.trainer_checkpoint_size}},
    }
    if ctx.settings.trainer_storage_class is not None:
        spec["storageClassName"] = ctx.settings.trainer_storage_class
    return spec


def _strategy(part: Part) -> dict[str, Any]:
    if part.singleton:
        # Never two trainers at once, not even for the length of a rolling update.
        return {"type": "Recreate"}
    if part is INFERENCE:
        # Keep serving capacity while a new version of the pods comes up.
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def deployment(ctx: BuildContext, part: Part) -> dict[str, Any]:
    if part is TRAINER and trainer_ranks(ctx.model) > 1:
        return trainer_ranks_set(ctx)
    spec: dict[str, Any] = {}
    replicas = fixed_replicas(ctx, part)
    if replicas is not None:
        spec["replicas"] = replicas
    spec |= {
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": 600,
        "selector": {"matchLabels": part_selector(ctx, part.name)},
        "strategy": _strategy(part),
        "template": pod_template(ctx, part, config_hash(ctx)),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, child_name(ctx.name, part.name), part_labels(ctx, part.name)),
        "spec": spec,
    }


def trainer_ranks_set(ctx: BuildContext) -> dict[str, Any]:
    """`training.workers > 1`: a StatefulSet, whose pod ordinals are the ranks.

    All ranks start together (Parallel: the rendezvous needs every one of them); a
    rank that dies breaks the group, every rank exits and restarts, and rank 0
    resumes from its checkpoint (the others receive its state).
    """
    name = child_name(ctx.name, TRAINER.name)
    spec: dict[str, Any] = {
        "replicas": trainer_ranks(ctx.model),
        "serviceName": name,
        "podManagementPolicy": "Parallel",
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": part_selector(ctx, TRAINER.name)},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": pod_template(ctx, TRAINER, config_hash(ctx)),
    }
    if ctx.settings.trainer_checkpoints == "persistent":
        spec["volumeClaimTemplates"] = [
            {"metadata": {"name": "checkpoints"}, "spec": _claim_spec(ctx)}
        ]
        spec["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": "Retain",  # the checkpoint outlives the model's trainer, as the claim
            "whenScaled": "Retain",
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(ctx, name, part_labels(ctx, TRAINER.name)),
        "spec": spec,
    }


def service(ctx: BuildContext, part: Part) -> dict[str, Any]:
    """Inference: the clients' endpoint. Workers: a headless Service for scraping metrics."""
    metrics = {
        "name": "metrics",
        "port": ctx.settings.metrics_port,
        "targetPort": "metrics",
        "protocol": "TCP",
    }
    spec: dict[str, Any] = {"selector": part_selector(ctx, part.name)}
    if part is INFERENCE:
        http = {
            "name": "http",
            "port": ctx.settings.inference_port,
            "targetPort": "http",
            "protocol": "TCP",
        }
        ports = [http, metrics]
        grpc = ctx.model.spec.inference.grpc
        if grpc.enabled:
            ports.insert(1, {
                "name": "grpc",
                "port": grpc.port,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",  # gRPC is HTTP/2 without TLS here
            })  # fmt: skip
        spec |= {"type": "ClusterIP", "ports": ports}
    else:
        spec |= {"clusterIP": "None", "ports": [metrics]}
    if part is TRAINER and trainer_ranks(ctx.model) > 1:
        # The ranks' stable names; rank 0's must resolve before any rank is ready.
        rendezvous = {"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}
        spec |= {"ports": [metrics, rendezvous], "publishNotReadyAddresses": True}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, child_name(ctx.name, part.name), part_labels(ctx, part.name)),
        "spec": spec,
    }
