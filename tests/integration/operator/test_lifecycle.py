"""The operator under kopf's test runner: create, update, invalid specs, missing Secrets,
delete, and a restart in the middle of a reconcile."""

from __future__ import annotations

from typing import Any

import pytest

from .plane import DEPLOYMENTS, ControlPlane, model_manifest, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KINDS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Service": "/api/v1/namespaces/{ns}/services",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "Deployment": DEPLOYMENTS,
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
}
# minimal model: 4 parts; inference and 2 workers autoscaled (2 partitions); trainer fixed.
EXPECTED = {
    "ServiceAccount": 4,
    "ConfigMap": 1,
    "Service": 4,
    "NetworkPolicy": 5,
    "Deployment": 4,
    "PodDisruptionBudget": 4,
    "HorizontalPodAutoscaler": 3,
}


def counts(plane: ControlPlane, ns: str, name: str) -> dict[str, int]:
    return {kind: len(plane.children(path, ns, name)) for kind, path in KINDS.items()}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_create_makes_every_child_owned_and_the_model_serves(
    control_plane: ControlPlane, ns: str
) -> None:
    created = control_plane.create_model(model_manifest("churn", ns))
    with control_plane.operator(ns):
        wait_for(lambda: counts(control_plane, ns, "churn") == EXPECTED, 60, "every child")
        status = control_plane.wait_serving(ns, "churn")
    assert condition(status, "Ready")["status"] == "True"
    assert status["observedGeneration"] == created["metadata"].get("generation", 1)
    uid = control_plane.model(ns, "churn")["metadata"]["uid"]  # type: ignore[index]
    for path in KINDS.values():
        for child in control_plane.children(path, ns, "churn"):
            (owner,) = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"], owner["controller"]) == ("DynamicModel", uid, True)


def deployment(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    got = plane.kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    assert got is not None, name
    return got


def events(plane: ControlPlane, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    items = plane.kube.list(f"/api/v1/namespaces/{ns}/events")
    return [
        e
        for e in items
        if e.get("involvedObject", {}).get("name") == name and e.get("reason") == reason
    ]


def test_update_changes_children_and_leaves_autoscaler_replicas(
    control_plane: ControlPlane, ns: str
) -> None:
    control_plane.create_model(model_manifest("churn", ns))
    with control_plane.operator(ns):
        control_plane.wait_serving(ns, "churn")
        # The HPA's stand-in sets replicas through its own field manager.
        control_plane.kube.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{ns}/deployments/churn-inference",
            params={"fieldManager": "autoscaler"},
            body={"spec": {"replicas": 3}},
            content_type="application/merge-patch+json",
        )
        control_plane.patch_model(
            ns, "churn", {"spec": {"inference": {"resources": {"cpu": "200m", "memory": "128Mi"}}}}
        )

        def updated() -> dict[str, Any] | None:
            d = deployment(control_plane, ns, "churn-inference")
            (container,) = d["spec"]["template"]["spec"]["containers"]
            return d if container["resources"]["requests"]["cpu"] == "200m" else None

        updated_deployment = wait_for(updated, 60, "the new CPU request in the Deployment")
        assert updated_deployment["spec"]["replicas"] == 3
        status = wait_for(
            lambda: (s := control_plane.status(ns, "churn")).get("observedGeneration") == 2 and s,
            60,
            "status of generation 2",
        )
    assert status["observedGeneration"] == 2
    if control_plane.real:
        owners = {
            m["manager"]: m.get("fieldsV1", {})
            for m in updated_deployment["metadata"]["managedFields"]
        }
        assert "f:replicas" in str(owners["autoscaler"])
        assert "f:replicas" not in str(owners["driftline-operator"])


def test_invalid_spec_fails_with_a_message_then_recovers(
    control_plane: ControlPlane, ns: str
) -> None:
    # Valid for the API server's schema and CEL, refused by the contract's own rule:
    # the sticky key is a request attribute and must not also be a feature.
    bad = model_manifest("churn", ns, rollout={"stickyKey": "x1"})
    control_plane.create_model(bad)
    with control_plane.operator(ns):
        status = wait_for(
            lambda: (s := control_plane.status(ns, "churn")).get("phase") == "Failed" and s,
            60,
            "phase Failed",
        )
        assert "spec.rollout.stickyKey" in status["message"]
        assert condition(status, "Ready")["reason"] == "InvalidSpec"
        wait_for(lambda: events(control_plane, ns, "churn", "Failed"), 30, "a Failed event")
        assert control_plane.children(DEPLOYMENTS, ns, "churn") == []
        control_plane.patch_model(ns, "churn", {"spec": {"rollout": {"stickyKey": "user_id"}}})
        control_plane.wait_serving(ns, "churn", what="phase Serving after the fix")


def pending_on_a_secret(control_plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    """The model's status once it is Pending on a Secret that does not exist."""
    status: dict[str, Any] = wait_for(
        lambda: (
            (s := control_plane.status(ns, name)).get("phase") == "Pending"
            and condition(s, "Ready").get("reason") == "DependencyMissing"
            and s
        ),
        60,
        "Pending on the missing Secret",
    )
    return status


# With a short backoff kopf's retry finds the Secret; with a long one only the tick can.
@pytest.mark.parametrize("retry_seconds", [1.0, 3600.0], ids=["kopf-retry", "tick"])
def test_missing_secret_waits_and_retries(
    control_plane: ControlPlane, ns: str, retry_seconds: float
) -> None:
    manifest = model_manifest("churn", ns)
    manifest["spec"]["kafka"]["credentialsSecret"] = "kafka-creds"
    control_plane.create_model(manifest)
    with control_plane.operator(ns, retry_seconds=retry_seconds):
        status = pending_on_a_secret(control_plane, ns, "churn")
        assert "kafka-creds" in status["message"]
        assert control_plane.children(DEPLOYMENTS, ns, "churn") == []
        control_plane.secret(ns, "kafka-creds", {"username": "u", "password": "p"})
        control_plane.wait_serving(ns, "churn", what="phase Serving once it exists")
    pod = deployment(control_plane, ns, "churn-joiner")["spec"]["template"]["spec"]
    assert {
        "name": "kafka-credentials",
        "secret": {"secretName": "kafka-creds", "defaultMode": 288},
    } in pod["volumes"]


def test_feasts_store_secret_is_waited_for_and_mounted_into_inference_alone(
    control_plane: ControlPlane, ns: str
) -> None:
    manifest = model_manifest("churn", ns)
    store = {"url": "redis://feast-redis:6390/1", "credentialsSecret": "feast-creds"}
    manifest["spec"]["feast"] = {"redis": store}
    control_plane.create_model(manifest)
    with control_plane.operator(ns, retry_seconds=1.0):
        status = pending_on_a_secret(control_plane, ns, "churn")
        assert "feast-creds" in status["message"]
        control_plane.secret(ns, "feast-creds", {"password": "p"})
        control_plane.wait_serving(ns, "churn", what="phase Serving once it exists")
    volume = {
        "name": "feast-credentials",
        "secret": {"secretName": "feast-creds", "defaultMode": 288},
    }
    for part in ("inference", "joiner", "drift"):
        pod = deployment(control_plane, ns, f"churn-{part}")["spec"]["template"]["spec"]
        assert (volume in pod["volumes"]) == (part == "inference"), part


def test_a_rerun_changes_nothing(control_plane: ControlPlane, ns: str) -> None:
    control_plane.create_model(model_manifest("churn", ns))
    with control_plane.operator(ns):
        control_plane.wait_serving(ns, "churn")
        versions = {
            (kind, c["metadata"]["name"]): c["metadata"]["resourceVersion"]
            for kind, path in KINDS.items()
            if kind != "Deployment"  # status moves their version; their spec is checked below
            for c in control_plane.children(path, ns, "churn")
        }
        generations = {
            d["metadata"]["name"]: d["metadata"]["generation"]
            for d in control_plane.children(DEPLOYMENTS, ns, "churn")
        }
        before = len(events(control_plane, ns, "churn", "Reconciled"))
        # A label change is a change kopf hands to the update handler: a full re-apply.
        control_plane.patch_model(ns, "churn", {"metadata": {"labels": {"team": "growth"}}})
        wait_for(
            lambda: len(events(control_plane, ns, "churn", "Reconciled")) > before,
            60,
            "a second reconcile",
        )
    after = {
        (kind, c["metadata"]["name"]): c["metadata"]["resourceVersion"]
        for kind, path in KINDS.items()
        if kind != "Deployment"
        for c in control_plane.children(path, ns, "churn")
    }
    assert after == versions
    assert {
        d["metadata"]["name"]: d["metadata"]["generation"]
        for d in control_plane.children(DEPLOYMENTS, ns, "churn")
    } == generations


def test_delete_collects_every_child(control_plane: ControlPlane, ns: str) -> None:
    control_plane.require_real("garbage collection of owned objects")
    control_plane.create_model(model_manifest("churn", ns))
    with control_plane.operator(ns):
        wait_for(lambda: counts(control_plane, ns, "churn") == EXPECTED, 60, "every child")
        control_plane.delete_model(ns, "churn")
        wait_for(lambda: control_plane.model(ns, "churn") is None, 60, "the model to go")
    wait_for(
        lambda: sum(counts(control_plane, ns, "churn").values()) == 0,
        120,
        "the garbage collector to delete every child",
    )


@pytest.mark.chaos
def test_killed_mid_reconcile_converges_to_one_of_each(
    control_plane: ControlPlane, ns: str, logs: Any
) -> None:
    control_plane.create_model(model_manifest("churn", ns))
    with control_plane.operator_process(ns, logs / "operator.log") as process:
        # Kill it as soon as the first child exists: the rest is not applied yet.
        wait_for(
            lambda: control_plane.children(KINDS["ServiceAccount"], ns, "churn"),
            120,
            "the first child",
            interval=0.02,
        )
        process.kill()
        process.wait(10)
    partial = counts(control_plane, ns, "churn")
    assert partial != EXPECTED, "killed too late: the reconcile had finished"
    with control_plane.operator(ns):
        wait_for(lambda: counts(control_plane, ns, "churn") == EXPECTED, 60, "every child")
        control_plane.wait_serving(ns, "churn")
    assert counts(control_plane, ns, "churn") == EXPECTED
