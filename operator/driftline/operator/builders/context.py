"""What every builder reads: the validated model, the operator's settings, and facts
about the cluster that the I/O layer found out (optional CRDs, Kafka auth mode).

Builders are pure: the same context always renders the same manifests, so they are
tested against golden files and the real Kubernetes schemas without a cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from driftline.api import API_VERSION, KIND, DynamicModel
from driftline.operator.settings import OperatorSettings

PART_OF = "driftline"
MANAGED_BY = "driftline-operator"
MODEL_LABEL = "driftline.io/model"
NAMESPACE_LABEL = "driftline.io/namespace"
COMPONENT_LABEL = "app.kubernetes.io/component"
CONFIG_HASH_ANNOTATION = "driftline.io/config-hash"
MAX_NAME = 63


@dataclass(frozen=True)
class Capabilities:
    """Optional APIs installed in the cluster, found by discovery in the I/O layer."""

    keda: bool = False  # keda.sh/v1alpha1 ScaledObject, TriggerAuthentication
    keda_http: bool = False  # http.keda.sh/v1alpha1 HTTPScaledObject (KEDA's HTTP add-on)
    prometheus_operator: bool = False  # monitoring.coreos.com/v1 ServiceMonitor
    karpenter: bool = False  # karpenter.sh/v1 NodePool


@dataclass(frozen=True)
class KafkaAuth:
    """Non-secret facts about the Kafka credentials Secret (its keys, the mechanism).

    KEDA's Kafka scaler needs the SASL mode and whether TLS is on as plain values;
    the secret values themselves stay in the Secret and are referenced by key.
    """

    secret: str
    sasl: str | None = None  # "plaintext" | "scram_sha256" | "scram_sha512" (KEDA's words)
    tls: bool = False
    has_ca: bool = False


@dataclass(frozen=True)
class BuildContext:
    model: DynamicModel
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    capabilities: Capabilities = field(default_factory=Capabilities)
    kafka_auth: KafkaAuth | None = None

    @property
    def name(self) -> str:
        return self.model.metadata.name

    @property
    def namespace(self) -> str:
        return self.model.metadata.namespace

    @property
    def gpu(self) -> int:
        return self.model.spec.inference.resources.gpu


def child_name(model: str, suffix: str = "") -> str:
    """`<model>-<suffix>`, a valid DNS-1035 label (Services need one) of at most 63 chars.

    Model names are DNS-1123 labels and may start with a digit or be 63 chars long;
    such names get a `dm-` prefix or are shortened with a stable hash, so one model
    always maps to the same children.
    """
    base = f"{model}-{suffix}" if suffix else model
    if base[0].isdigit():
        base = f"dm-{base}"
    if len(base) <= MAX_NAME:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    tail = f"-{digest}-{suffix}" if suffix else f"-{digest}"
    return base[: MAX_NAME - len(tail)].rstrip("-") + tail


def model_labels(ctx: BuildContext) -> dict[str, str]:
    """Labels on every child of one DynamicModel (the prune and policy selector)."""
    return {
        "app.kubernetes.io/instance": ctx.name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        MODEL_LABEL: ctx.name,
    }


def part_selector(ctx: BuildContext, part: str) -> dict[str, str]:
    """The immutable Deployment selector of one part (kept small on purpose)."""
    return {MODEL_LABEL: ctx.name, COMPONENT_LABEL: part}


def part_labels(ctx: BuildContext, part: str) -> dict[str, str]:
    return {
        **model_labels(ctx),
        "app.kubernetes.io/name": f"driftline-{part}",
        COMPONENT_LABEL: part,
    }


def owner_reference(ctx: BuildContext) -> dict[str, Any]:
    """Makes the DynamicModel the controller of a namespaced child (garbage collection)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ctx.name,
        "uid": ctx.model.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    ctx: BuildContext,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ctx.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(ctx)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def quantity(value: float) -> str:
    """A number as a Kubernetes quantity: 8 -> '8', 0.5 -> '500m', 2.25 -> '2250m'."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"
