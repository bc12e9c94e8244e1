"""Every kind of object the operator writes, with its REST path.

One table for the I/O layer (where to apply, list, prune) and for the generated
RBAC (what the operator may touch): a kind added here is both handled and allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    capability: str | None = None  # the `Capabilities` flag that says the API exists
    prune: bool = True  # deleted when the spec no longer asks for it

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def collection(self, namespace: str | None = None) -> str:
        root = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace is not None:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def path(self, name: str, namespace: str | None = None) -> str:
        return f"{self.collection(namespace)}/{name}"


CHILD_KINDS: tuple[Kind, ...] = (
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("v1", "ConfigMap", "configmaps"),
    # The trainer's checkpoint outlives `training.mode: off`; it goes with the model.
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", prune=False),
    Kind("v1", "Service", "services"),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("apps/v1", "StatefulSet", "statefulsets"),  # the trainer's ranks (training.workers)
    Kind("batch/v1", "Job", "jobs"),  # the import of `spec.model.initial`
    Kind("batch/v1", "CronJob", "cronjobs"),  # scheduled retraining
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    Kind("keda.sh/v1alpha1", "TriggerAuthentication", "triggerauthentications", capability="keda"),
    Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", capability="keda"),
    # KEDA's HTTP add-on: its interceptor holds requests while inference scales from zero.
    Kind("http.keda.sh/v1alpha1", "HTTPScaledObject", "httpscaledobjects", capability="keda_http"),
    Kind(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors",
        capability="prometheus_operator",
    ),
    Kind("karpenter.sh/v1", "NodePool", "nodepools", namespaced=False, capability="karpenter"),
)

SECRET = Kind("v1", "Secret", "secrets")
# Read only: listed to say why a part has no available replica.
POD = Kind("v1", "Pod", "pods")

_BY_KIND = {(k.api_version, k.kind): k for k in CHILD_KINDS}

# The group/version whose presence in discovery turns each optional capability on.
CAPABILITY_APIS: dict[str, str] = {
    k.capability: k.api_version for k in CHILD_KINDS if k.capability is not None
}


def kind_of(manifest: dict[str, Any]) -> Kind:
    try:
        return _BY_KIND[(manifest["apiVersion"], manifest["kind"])]
    except KeyError:
        raise ValueError(f"not a kind the operator manages: {manifest.get('kind')}") from None


def path_of(manifest: dict[str, Any]) -> str:
    meta = manifest["metadata"]
    return kind_of(manifest).path(meta["name"], meta.get("namespace"))
