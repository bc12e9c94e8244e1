"""The control plane is a real cluster, not an emulator: it validates, merges,
schedules, rolls out and collects garbage the way production clusters do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError, UnprocessibleEntityError

from driftline_testing.kube import ControlPlane
from driftline_testing.kube_files import GPU_RESOURCE, POOL_LABEL
from driftline_testing.rig import RigLayout
from tests.integration.rig.kube_helpers import eventually, install_crd

pytestmark = [pytest.mark.integration, pytest.mark.rig]

PAUSE = "registry.k8s.io/pause:3.10"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.rig.driftline.io"},
    "spec": {
        "group": "rig.driftline.io",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["min", "max"],
                                "properties": {
                                    "min": {"type": "integer"},
                                    "max": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {"rule": "self.min <= self.max", "message": "min exceeds max"}
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def resource(dyn: DynamicClient, api_version: str, kind: str) -> Any:
    return dyn.resources.get(api_version=api_version, kind=kind)


def pod(name: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": PAUSE}
    if "limits" in spec:
        container["resources"] = {"limits": spec.pop("limits")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **spec},
    }


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": PAUSE,
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


def error_text(info: pytest.ExceptionInfo[Any]) -> str:
    """The API server's Status message of a refused request."""
    body = info.value.body
    return body.decode() if isinstance(body, bytes) else str(body)


def condition(obj: Any, kind: str) -> dict[str, Any] | None:
    for cond in obj.to_dict().get("status", {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return None


def test_api_server_reports_its_release(kube: ControlPlane) -> None:
    version = kube.request("GET", "/version")
    assert version["gitVersion"].startswith("v1."), version
    nodes = kube.request("GET", "/api/v1/nodes")["items"]
    pools = {node["metadata"]["labels"][POOL_LABEL] for node in nodes}
    assert pools == {"cpu", "gpu"}


def test_crd_with_a_cel_rule_refuses_a_bad_object(dyn: DynamicClient, kube_namespace: str) -> None:
    widgets = install_crd(dyn, WIDGET_CRD)
    good = {"apiVersion": "rig.driftline.io/v1", "kind": "Widget", "metadata": {"name": "ok"}}
    widgets.create(body={**good, "spec": {"min": 1, "max": 2}}, namespace=kube_namespace)

    with pytest.raises(UnprocessibleEntityError) as bad:
        widgets.create(
            body={**good, "metadata": {"name": "bad"}, "spec": {"min": 3, "max": 2}},
            namespace=kube_namespace,
        )
    assert "min exceeds max" in error_text(bad)

    with pytest.raises(UnprocessibleEntityError) as wrong_type:
        widgets.create(
            body={**good, "metadata": {"name": "typed"}, "spec": {"min": "one", "max": 2}},
            namespace=kube_namespace,
        )
    assert "spec.min" in error_text(wrong_type)


def test_server_side_apply_reports_a_field_manager_conflict(
    dyn: DynamicClient, kube_namespace: str
) -> None:
    configmaps = resource(dyn, "v1", "ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}}
    dyn.server_side_apply(
        configmaps,
        body={**body, "data": {"owner": "alice"}},
        namespace=kube_namespace,
        field_manager="alice",
    )
    with pytest.raises(ConflictError) as conflict:
        dyn.server_side_apply(
            configmaps,
            body={**body, "data": {"owner": "bob"}},
            namespace=kube_namespace,
            field_manager="bob",
        )
    message = error_text(conflict)
    assert "alice" in message and ".data.owner" in message

    forced = dyn.server_side_apply(
        configmaps,
        body={**body, "data": {"owner": "bob"}},
        namespace=kube_namespace,
        field_manager="bob",
        force_conflicts=True,
    )
    assert forced.data.owner == "bob"
    managers = {entry["manager"] for entry in forced.to_dict()["metadata"]["managedFields"]}
    assert "bob" in managers


def test_deployment_becomes_available_on_simulated_nodes(
    dyn: DynamicClient, kube_namespace: str
) -> None:
    deployments = resource(dyn, "apps/v1", "Deployment")
    deployments.create(body=deployment("web", replicas=3), namespace=kube_namespace)

    def available() -> Any:
        current = deployments.get(name="web", namespace=kube_namespace)
        cond = condition(current, "Available")
        ready = current.status.availableReplicas == 3 and cond and cond["status"] == "True"
        return current if ready else None

    eventually(available, 90, "Deployment web Available with 3 replicas")
    pods = resource(dyn, "v1", "Pod").get(namespace=kube_namespace, label_selector="app=web")
    nodes = {p.spec.nodeName for p in pods.items}
    # No toleration for the GPU taint: the scheduler keeps them on the CPU pool.
    assert nodes and all(name.startswith("cpu-") for name in nodes), nodes
    assert {p.status.phase for p in pods.items} == {"Running"}


def test_simulated_nodes_renew_their_leases(kube: ControlPlane) -> None:
    """Node liveness comes from Leases, as with kubelets: a node whose Lease is not
    renewed is found NotReady after the grace period, and the node lifecycle
    controller then marks every Pod on it not ready, for good on simulated nodes."""

    def renewals() -> dict[str, str]:
        leases = kube.request(
            "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        )
        return {lease["metadata"]["name"]: lease["spec"]["renewTime"] for lease in leases["items"]}

    nodes = {node["metadata"]["name"] for node in kube.request("GET", "/api/v1/nodes")["items"]}
    first = eventually(
        lambda: (got := renewals()) and set(got) == nodes and got, 30, "a Lease per node"
    )
    # kwok renews every quarter of the 40 s lease duration, as a kubelet does.
    eventually(
        lambda: all(renewals()[name] != first[name] for name in nodes),
        20,
        "every node's Lease renewed",
    )


def test_gpu_pods_land_only_where_they_tolerate_the_taint(
    dyn: DynamicClient, kube_namespace: str
) -> None:
    pods = resource(dyn, "v1", "Pod")
    gpu_limits = {GPU_RESOURCE: "1"}
    tolerate = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    on_gpu = {POOL_LABEL: "gpu"}
    pods.create(
        body=pod("tolerates", limits=gpu_limits, tolerations=tolerate), namespace=kube_namespace
    )
    pods.create(
        body=pod("intolerant", limits=gpu_limits, nodeSelector=on_gpu), namespace=kube_namespace
    )
    pods.create(
        body=pod("greedy", limits={GPU_RESOURCE: "3"}, tolerations=tolerate),  # nodes have 2
        namespace=kube_namespace,
    )

    def running(name: str) -> Any:
        current = pods.get(name=name, namespace=kube_namespace)
        return current if current.status.phase == "Running" else None

    placed = eventually(lambda: running("tolerates"), 60, "GPU pod running")
    assert placed.spec.nodeName.startswith("gpu-")

    def unschedulable(name: str) -> str | None:
        cond = condition(pods.get(name=name, namespace=kube_namespace), "PodScheduled")
        if cond and cond["status"] == "False" and cond.get("reason") == "Unschedulable":
            return str(cond.get("message", ""))
        return None

    assert "untolerated taint" in eventually(lambda: unschedulable("intolerant"), 60, "refused")
    assert f"Insufficient {GPU_RESOURCE}" in eventually(
        lambda: unschedulable("greedy"), 60, "refused for capacity"
    )


def test_deleting_an_owner_garbage_collects_its_children(
    dyn: DynamicClient, kube_namespace: str
) -> None:
    configmaps = resource(dyn, "v1", "ConfigMap")
    owner = configmaps.create(
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
        namespace=kube_namespace,
    )
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    for index in range(3):
        configmaps.create(
            body={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"child-{index}", "ownerReferences": [reference]},
            },
            namespace=kube_namespace,
        )
    # Deployment -> ReplicaSet -> Pods: two levels of ownership, and Pods that
    # the (simulated) kubelet has to finish terminating.
    deployments = resource(dyn, "apps/v1", "Deployment")
    deployments.create(body=deployment("doomed", replicas=2), namespace=kube_namespace)
    pods = resource(dyn, "v1", "Pod")
    eventually(
        lambda: len(pods.get(namespace=kube_namespace, label_selector="app=doomed").items) == 2,
        60,
        "2 pods of the Deployment",
    )

    configmaps.delete(name="owner", namespace=kube_namespace, propagation_policy="Background")
    deployments.delete(name="doomed", namespace=kube_namespace, propagation_policy="Background")

    def children_gone() -> bool:
        names = {cm.metadata.name for cm in configmaps.get(namespace=kube_namespace).items}
        return not any(name.startswith("child-") for name in names)

    eventually(children_gone, 60, "owned ConfigMaps collected")
    replicasets = resource(dyn, "apps/v1", "ReplicaSet")
    eventually(
        lambda: (
            not replicasets.get(namespace=kube_namespace, label_selector="app=doomed").items
            and not pods.get(namespace=kube_namespace, label_selector="app=doomed").items
        ),
        60,
        "ReplicaSet and Pods collected",
    )
    with pytest.raises(NotFoundError):
        configmaps.get(name="child-0", namespace=kube_namespace)


@pytest.mark.slow
def test_stop_leaves_nothing_running(rig: RigLayout, tmp_path: Path) -> None:
    plane = ControlPlane(node_pools=(), log_dir=tmp_path, layout=rig)
    with plane:
        pids = [p.pid for p in plane._processes]
        assert len(pids) == 5 and all(pids)
        root = plane.root
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
    assert not root.exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
