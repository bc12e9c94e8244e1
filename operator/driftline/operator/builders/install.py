"""The operator's own manifests: namespace, identity, least-privilege RBAC, Deployment.

RBAC is generated from the same table of kinds the operator writes (`kinds.py`),
so a kind it manages is exactly a kind it may touch. No wildcards; Secrets are
`get` only (the operator checks that a model's credential Secrets exist and reads
Redis credentials for the rollout; it never lists or watches Secrets); no escalate,
bind or impersonate. Watching a list of namespaces gives a Role per namespace, and
a ClusterRole only for what is cluster-scoped.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from driftline.api import GROUP, PLURAL
from driftline.operator.builders.pods import container_security_context, pod_security_context
from driftline.operator.kinds import CHILD_KINDS, POD, SECRET
from driftline.operator.settings import OperatorSettings

NAME = "driftline-operator"
NAMESPACE = "driftline-system"
LIVENESS_PORT = 8080  # as docker/operator.Dockerfile expects
LABELS = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/part-of": "driftline",
    "app.kubernetes.io/component": "operator",
}
# Children: listed (to prune and to read Deployment status), applied, deleted when
# the spec no longer asks for them. `create` because server-side apply creates.
CHILD_VERBS = ["list", "create", "patch", "delete"]


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": sorted(resources), "verbs": verbs}


def namespaced_rules() -> list[dict[str, Any]]:
    rules = [
        # kopf watches DynamicModels and keeps its progress in their annotations.
        _rule(GROUP, [PLURAL], ["get", "list", "watch", "patch"]),
        _rule(GROUP, [f"{PLURAL}/status"], ["get", "patch"]),
        # Children name their DynamicModel with blockOwnerDeletion.
        _rule(GROUP, [f"{PLURAL}/finalizers"], ["update"]),
        _rule("", ["events"], ["create"]),
        _rule(SECRET.group, [SECRET.plural], ["get"]),
        # Pods are listed, never written: why a part is not available goes in status.
        _rule(POD.group, [POD.plural], ["list"]),
    ]
    by_access: dict[tuple[str, bool], list[str]] = defaultdict(list)
    for kind in CHILD_KINDS:
        if kind.namespaced:
            by_access[(kind.group, kind.prune)].append(kind.plural)
    rules += [_rule(group, plurals, _verbs(prune)) for (group, prune), plurals in by_access.items()]
    return rules


def _verbs(prune: bool) -> list[str]:
    return CHILD_VERBS if prune else [v for v in CHILD_VERBS if v != "delete"]


def cluster_rules() -> list[dict[str, Any]]:
    return [_rule(k.group, [k.plural], _verbs(k.prune)) for k in CHILD_KINDS if not k.namespaced]


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace is not None:
        meta["namespace"] = namespace
    return {**meta, **extra}


def _subjects(namespace: str) -> list[dict[str, Any]]:
    return [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]


def rbac(namespace: str, watch: list[str]) -> list[dict[str, Any]]:
    """ClusterRole(s) and bindings; with `watch`, Roles in those namespaces instead."""
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    out: list[dict[str, Any]] = []
    if not watch:
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(NAME),
                "rules": namespaced_rules() + cluster_rules(),
            }
        )
    else:
        cluster_name = f"{NAME}-cluster"
        role_ref = {**role_ref, "name": cluster_name}
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(cluster_name),
                "rules": cluster_rules(),
            }
        )
        for ns in watch:
            out.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": _meta(NAME, ns),
                    "rules": namespaced_rules(),
                }
            )
            out.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": _meta(NAME, ns),
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": NAME,
                    },
                    "subjects": _subjects(namespace),
                }
            )
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(role_ref["name"]),
            "roleRef": role_ref,
            "subjects": _subjects(namespace),
        }
    )
    return out


def user_roles() -> list[dict[str, Any]]:
    """Lets the built-in admin/edit/view roles manage or read DynamicModels (aggregation)."""
    write = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
    read = ["get", "list", "watch"]
    out = []
    for name, verbs, aggregate in (
        ("driftline-edit", write, ("admin", "edit")),
        ("driftline-view", read, ("view",)),
    ):
        labels = {f"rbac.authorization.k8s.io/aggregate-to-{a}": "true" for a in aggregate}
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name, "labels": {**LABELS, **labels}},
                "rules": [
                    _rule(GROUP, [PLURAL], verbs),
                    _rule(GROUP, [f"{PLURAL}/status"], ["get"]),
                ],
            }
        )
    return out


def deployment(settings: OperatorSettings, namespace: str, watch: list[str]) -> dict[str, Any]:
    env = [
        {"name": "DRIFTLINE_OPERATOR_IMAGE", "value": settings.image},
        {"name": "DRIFTLINE_OPERATOR_INFERENCE_IMAGE", "value": settings.inference_image},
        {"name": "DRIFTLINE_OPERATOR_GPU_IMAGE", "value": settings.gpu_image},
        {"name": "DRIFTLINE_OPERATOR_IMAGE_TAG", "value": settings.image_tag},
    ]
    if watch:
        env.append({"name": "DRIFTLINE_OPERATOR_NAMESPACES", "value": ",".join(watch)})
    container = {
        "name": "operator",
        "image": f"{settings.operator_image}:{settings.image_tag}",
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "driftline.operator"],
        "env": env,
        "ports": [
            {"name": "health", "containerPort": LIVENESS_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": settings.operator_metrics_port, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "initialDelaySeconds": 10,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
        },
        # Ready once kopf serves its health endpoint (its watches started), not as
        # soon as the process runs.
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME, namespace),
        "spec": {
            "replicas": 1,
            # One operator at a time: the old pod stops before the new one starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }


def network_policy(namespace: str) -> dict[str, Any]:
    """Connections in only to the metrics port (Prometheus) and the health port (the
    kubelet's probe). Egress stays open: the operator talks to the API server and to
    every model's Kafka, Redis and MLflow, whose addresses only the models know."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(NAME, namespace),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "ports": [
                        {"port": "metrics", "protocol": "TCP"},
                        {"port": "health", "protocol": "TCP"},
                    ]
                }
            ],
            "egress": [{}],
        },
    }


def operator_manifests(
    settings: OperatorSettings, namespace: str = NAMESPACE, watch: list[str] | None = None
) -> list[dict[str, Any]]:
    watch = list(watch or [])
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {**LABELS, "pod-security.kubernetes.io/enforce": "restricted"},
            },
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace)},
        *rbac(namespace, watch),
        *user_roles(),
        deployment(settings, namespace, watch),
        network_policy(namespace),
    ]
