"""What the real control plane adds: schema and CEL refusals, scheduling onto the GPU
pool, and optional APIs (KEDA, Prometheus Operator) found by discovery."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.operator.kube import KubeError

from .plane import ControlPlane, model_manifest, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KEDA = [
    ("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    ("keda.sh", "v1alpha1", "triggerauthentications", "TriggerAuthentication"),
]
PROMETHEUS = [("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")]
KEDA_HTTP = [("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject")]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"inference": {"replicas": {"min": 5, "max": 2}}}, "replicas.min must not exceed"),
        ({"rollout": {"canary": {"steps": [50, 20]}}}, "must rise and end at 100"),
        ({"kafka": {"bootstrapServers": "k:9092", "partitions": 0}}, "partitions"),
        ({"drift": {"detector": "magic"}}, "detector"),
        ({"inference": {"replicaz": 3}}, "replicaz"),
        (
            {
                "inference": {"replicas": {"min": 3}, "resources": {"gpu": 2}},
                "cost": {"maxGpus": 4},
            },
            "cost.maxGpus is below",
        ),
    ],
)
def test_the_api_server_refuses_invalid_specs(
    control_plane: ControlPlane, ns: str, change: dict[str, Any], says: str
) -> None:
    control_plane.require_real("CRD schema and CEL validation")
    manifest = model_manifest("bad", ns)
    for key, value in change.items():
        manifest["spec"][key] = {**manifest["spec"].get(key, {}), **value}
    with pytest.raises(KubeError) as refused:
        control_plane.kube.request(
            "POST",
            f"/apis/driftline.io/v1alpha1/namespaces/{ns}/dynamicmodels",
            params={"fieldValidation": "Strict"},
            body=manifest,
        )
    assert refused.value.status in (400, 422)  # 400: strict decoding of an unknown field
    assert says in refused.value.message


def test_gpu_inference_lands_on_the_gpu_pool_and_nothing_else_does(
    control_plane: ControlPlane, ns: str
) -> None:
    control_plane.require_real("the scheduler and simulated GPU nodes")
    pool = control_plane.gpu_pool()
    manifest = model_manifest(
        "vision",
        ns,
        inference={
            "replicas": {"min": 2, "max": 2},
            "resources": {"cpu": "100m", "memory": "128Mi", "gpu": 1},
            "nodePool": {"nodeSelector": pool["labels"], "tolerations": pool["tolerations"]},
        },
    )
    control_plane.create_model(manifest)
    with control_plane.operator(ns):
        control_plane.wait_serving(ns, "vision", 180)
    nodes = {n["metadata"]["name"]: n for n in control_plane.kube.list("/api/v1/nodes")}
    pods = control_plane.kube.list(f"/api/v1/namespaces/{ns}/pods", "driftline.io/model=vision")
    placed: dict[str, set[bool]] = {}
    for pod in pods:
        node = nodes[pod["spec"]["nodeName"]]
        on_gpu = "nvidia.com/gpu" in node.get("status", {}).get("capacity", {})
        part = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        placed.setdefault(part, set()).add(on_gpu)
    assert placed.pop("inference") == {True}
    assert placed and all(where == {False} for where in placed.values()), placed


def test_optional_apis_are_found_and_used(control_plane: ControlPlane, ns: str) -> None:
    manifest = model_manifest("churn", ns)
    manifest["spec"]["kafka"]["credentialsSecret"] = "kafka-creds"
    control_plane.secret(
        ns, "kafka-creds", {"username": "u", "password": "p", "mechanism": "PLAIN"}
    )
    control_plane.create_model(manifest)
    hpas = "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers"
    with control_plane.operator(ns):
        wait_for(lambda: len(control_plane.children(hpas, ns, "churn")) == 3, 60, "three HPAs")
        with control_plane.optional_apis(*KEDA, *PROMETHEUS):
            # A spec change makes the operator look again (discovery is cached for a TTL).
            control_plane.patch_model(ns, "churn", {"spec": {"drift": {"window": 2000}}})
            scaled = wait_for(
                lambda: (
                    len(
                        found := control_plane.children(
                            "/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects", ns, "churn"
                        )
                    )
                    == 2
                    and found
                ),
                60,
                "ScaledObjects for the joiner and the drift monitor",
            )
            # The workers' HPAs were pruned; inference keeps its own.
            wait_for(lambda: len(control_plane.children(hpas, ns, "churn")) == 1, 60, "one HPA")
            monitors = control_plane.children(
                "/apis/monitoring.coreos.com/v1/namespaces/{ns}/servicemonitors", ns, "churn"
            )
            auth = control_plane.children(
                "/apis/keda.sh/v1alpha1/namespaces/{ns}/triggerauthentications", ns, "churn"
            )
    assert len(monitors) == 1 and len(auth) == 1
    triggers = [t for s in scaled for t in s["spec"]["triggers"]]
    assert {t["metadata"]["sasl"] for t in triggers} == {"plaintext"}
    assert all(t["authenticationRef"]["name"] == "churn-kafka" for t in triggers)


def test_the_trainer_keeps_its_checkpoint_on_a_bound_claim(
    control_plane: ControlPlane, ns: str
) -> None:
    control_plane.require_real("volume binding by the controller-manager and the scheduler")
    volume = f"{ns}-checkpoints"
    control_plane.kube.request(
        "POST",
        "/api/v1/persistentvolumes",
        body={
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "",
                "hostPath": {"path": f"/var/lib/driftline-tests/{volume}"},
            },
        },
    )
    try:
        control_plane.create_model(model_manifest("churn", ns))
        with control_plane.operator(ns, trainer_checkpoints="persistent", trainer_storage_class=""):
            control_plane.wait_serving(ns, "churn", 120)
        claim = control_plane.kube.get(
            f"/api/v1/namespaces/{ns}/persistentvolumeclaims/churn-trainer-checkpoints"
        )
        assert claim is not None and claim["status"]["phase"] == "Bound"
        assert claim["spec"]["volumeName"] == volume
    finally:
        control_plane.kube.delete(f"/api/v1/persistentvolumes/{volume}")


def test_kubectl_get_shows_the_crds_columns(control_plane: ControlPlane, ns: str) -> None:
    """`kubectl get dynamicmodels` asks the API server for a Table; its columns come
    from the CRD's printer columns."""
    control_plane.require_real("server-side printing of the CRD's columns")
    control_plane.create_model(model_manifest("churn", ns))
    table = control_plane.kube.request(
        "GET",
        f"/apis/driftline.io/v1alpha1/namespaces/{ns}/dynamicmodels",
        accept="application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == ["Name", "Phase", "Stable", "Candidate", "Canary%", "Drift", "Age"]
    assert table["rows"][0]["cells"][0] == "churn"


def test_a_part_that_cannot_start_says_why_in_status(control_plane: ControlPlane, ns: str) -> None:
    """No default StorageClass on the rig: the trainer's checkpoint claim stays Pending,
    and a part asking for more CPU than the nodes have is not scheduled. Status names
    both causes and the setting that fixes the first, not only `0/1`."""
    control_plane.require_real("the scheduler and volume binding")
    control_plane.create_model(model_manifest("churn", ns))
    huge = {"cpu": "500", "memory": "128Mi"}
    with control_plane.operator(
        ns, trainer_checkpoints="persistent", trainer_storage_class=None, joiner_resources=huge
    ):

        def reasons() -> str | None:
            ready = next(
                (
                    c
                    for c in control_plane.status(ns, "churn").get("conditions", [])
                    if c["type"] == "Ready"
                ),
                None,
            )
            message = (ready or {}).get("message", "")
            named = "PersistentVolumeClaim churn-trainer-checkpoints is Pending" in message
            return message if named and "Insufficient cpu" in message else None

        message = wait_for(reasons, 90, "the Ready condition names why parts are unavailable")
    assert "trainer 0/1 (PersistentVolumeClaim" in message and "trainer_storage_class" in message
    assert "joiner 0/1 (Unschedulable: 0/" in message
    phase = control_plane.status(ns, "churn")
    assert phase["phase"] == "Pending" and "joiner (Unschedulable" in phase["message"]


def test_idle_parts_scale_to_zero_through_keda_and_inference_through_the_http_add_on(
    control_plane: ControlPlane, ns: str
) -> None:
    manifest = model_manifest("churn", ns)
    manifest["spec"]["scaling"] = {"idle": {"afterSeconds": 120}}
    control_plane.create_model(manifest)
    scaled_objects = "/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects"
    http_scaled = "/apis/http.keda.sh/v1alpha1/namespaces/{ns}/httpscaledobjects"
    hpas = "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers"

    def ready_message() -> str:
        for c in control_plane.status(ns, "churn").get("conditions", []):
            if c["type"] == "Ready":
                return str(c.get("message", ""))
        return ""

    with control_plane.operator(ns):
        # Without KEDA: every part keeps one replica, and status says why.
        wait_for(lambda: "KEDA is not installed" in ready_message(), 60, "the no-KEDA note")
        with control_plane.optional_apis(*KEDA):
            control_plane.patch_model(ns, "churn", {"spec": {"drift": {"window": 2000}}})
            found = wait_for(
                lambda: len(f := control_plane.children(scaled_objects, ns, "churn")) == 3 and f,
                60,
                "ScaledObjects for joiner, drift monitor and trainer",
            )
            wait_for(lambda: "HTTP add-on" in ready_message(), 60, "the inference note")
            assert len(control_plane.children(hpas, ns, "churn")) == 1  # inference's
            with control_plane.optional_apis(*KEDA_HTTP):
                control_plane.patch_model(ns, "churn", {"spec": {"drift": {"window": 3000}}})
                http = wait_for(
                    lambda: len(f := control_plane.children(http_scaled, ns, "churn")) == 1 and f,
                    60,
                    "an HTTPScaledObject for inference",
                )
                wait_for(lambda: not control_plane.children(hpas, ns, "churn"), 60, "no HPA")
                wait_for(lambda: "HTTP add-on" not in ready_message(), 60, "no note")
    by_part = {s["metadata"]["name"]: s["spec"] for s in found}
    assert {spec["minReplicaCount"] for spec in by_part.values()} == {0}
    assert {spec["cooldownPeriod"] for spec in by_part.values()} == {120}
    assert by_part["churn-trainer"]["maxReplicaCount"] == 1
    groups = {t["metadata"]["consumerGroup"] for s in found for t in s["spec"]["triggers"]}
    assert groups == {f"driftline-churn-{p}" for p in ("joiner", "drift", "trainer")}
    assert http[0]["spec"]["replicas"]["min"] == 0
    assert http[0]["spec"]["scaledownPeriod"] == 120
