"""A Karpenter NodePool for a model's inference pods (when Karpenter's CRDs exist).

Karpenter launches nodes for pending pods that fit a NodePool's requirements and
tolerate its taints. The pool is made from the spec: its nodeSelector labels become
requirements (Karpenter puts them on the nodes it launches), GPU pools are tainted
`nvidia.com/gpu:NoSchedule` (only pods that tolerate it, the GPU inference pods,
land there) and limited to `replicas.max x gpu` GPUs (less under `cost.maxGpus`).
The node class (EC2NodeClass on EKS) comes from the operator's settings.

A NodePool is cluster-scoped, and a namespaced DynamicModel cannot own it; the
operator deletes it itself when the model goes (a kopf finalizer).
"""

from __future__ import annotations

import hashlib
from typing import Any

from driftline.operator.builders.context import (
    MAX_NAME,
    MODEL_LABEL,
    NAMESPACE_LABEL,
    BuildContext,
    model_labels,
)
from driftline.operator.builders.pods import GPU_RESOURCE
from driftline.operator.builders.scaling import inference_max_replicas

AWS_NODE_CLASS_GROUP = "karpenter.k8s.aws"


def node_pool_name(ctx: BuildContext) -> str:
    """Also a node label value (`karpenter.sh/nodepool`), so at most 63 characters."""
    base = f"driftline-{ctx.namespace}-{ctx.name}"
    if len(base) <= MAX_NAME:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: MAX_NAME - 9].rstrip('-')}-{digest}"


def node_pool_labels(ctx: BuildContext) -> dict[str, str]:
    return {**model_labels(ctx), NAMESPACE_LABEL: ctx.namespace}


def _node_labels(ctx: BuildContext) -> dict[str, str]:
    return {MODEL_LABEL: ctx.name, NAMESPACE_LABEL: ctx.namespace}


def _taints(ctx: BuildContext) -> list[dict[str, str]]:
    taints: list[dict[str, str]] = []
    if ctx.gpu:
        taints.append({"key": GPU_RESOURCE, "effect": "NoSchedule"})
    for toleration in ctx.model.spec.inference.node_pool.tolerations:
        # Only an exact toleration says which taint the user's pool carries.
        if toleration.operator == "Equal" and toleration.key and toleration.effect:
            if any(t["key"] == toleration.key for t in taints):
                continue
            taint = {"key": toleration.key, "effect": toleration.effect}
            if toleration.value:
                taint["value"] = toleration.value
            taints.append(taint)
    return taints


def node_pool(ctx: BuildContext) -> dict[str, Any] | None:
    pool = ctx.model.spec.inference.node_pool
    if not (ctx.capabilities.karpenter and pool.karpenter):
        return None
    node_class = ctx.settings.karpenter_node_class
    requirements: list[dict[str, Any]] = [
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
    ]
    requirements += [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted(pool.node_selector.items())
    ]
    if ctx.gpu and node_class.group == AWS_NODE_CLASS_GROUP:
        requirements.append(
            {
                "key": "karpenter.k8s.aws/instance-gpu-manufacturer",
                "operator": "In",
                "values": ["nvidia"],
            }
        )
    template_spec: dict[str, Any] = {
        "nodeClassRef": {
            "group": node_class.group,
            "kind": node_class.kind,
            "name": node_class.name,
        },
        "requirements": requirements,
        "expireAfter": "720h",
    }
    taints = _taints(ctx)
    if taints:
        template_spec["taints"] = taints
    spec: dict[str, Any] = {
        # Node labels: Karpenter refuses kubernetes.io domains here, so only ours.
        "template": {"metadata": {"labels": _node_labels(ctx)}, "spec": template_spec},
        "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5m"},
    }
    if ctx.gpu:
        # Never more GPUs than the autoscaler's ceiling can use (capped by cost.maxGpus).
        spec["limits"] = {GPU_RESOURCE: str(inference_max_replicas(ctx) * ctx.gpu)}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        # Cluster-scoped: no namespace and no ownerReferences (see the module docstring).
        "metadata": {"name": node_pool_name(ctx), "labels": node_pool_labels(ctx)},
        "spec": spec,
    }
