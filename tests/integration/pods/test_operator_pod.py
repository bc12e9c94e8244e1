"""The chart on the rig's real node: `helm install` into a namespace under the
restricted Pod Security Standard, with the chart's own RBAC, runs the operator image
built from this tree until its Pod is Ready; the CRD the chart brings serves a
DynamicModel, and the operator, with no Kafka, Redis or MLflow to reach, keeps
running and says in the model's status what it waits for.

The operator killed mid-reconcile (its Pod deleted with no grace, once right after a
model's apply and once right after a spec change) converges, under the Pod its
Deployment brings back, to exactly the children its builders render for the model.

Measured and printed: the image's import into the node, the operator Pod's Ready
time after `helm install`, its memory (the kubelet's summary), and the seconds from
each kill to a new Ready operator and to a converged model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from driftline_testing.images import BuiltImage, DockerDaemon, ImageBuilder
from driftline_testing.node import NodeStack
from tests.deploy.chart import CHART, ROOT, values_file
from tests.integration.pods.cluster import (
    SMALL_INFERENCE,
    SMALL_PARTS,
    Kube,
    apply_model,
    create_and_kill_operator,
    is_ready,
    kill_operator,
    model_children,
    pod_memory,
    report,
    restricted_namespace,
    wait_new_operator,
    wanted_children,
)

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1800)]

RELEASE = "driftline"
NAMESPACE = "driftline-system"
MODELS = "models"
SAMPLE = ROOT / "manifests" / "samples" / "minimal.yaml"
COLUMNS = ["NAME", "PHASE", "STABLE", "CANDIDATE", "CANARY%", "DRIFT", "AGE"]


def operator_pod(kube: Kube) -> dict[str, Any] | None:
    selector = "app.kubernetes.io/name=driftline-operator"
    pods = kube.json("get", "pods", "-n", NAMESPACE, "-l", selector)
    return pods["items"][0] if pods["items"] else None


def why_not_ready(kube: Kube, pod: dict[str, Any] | None) -> str:
    """The Pod's state, its events and its log: what a failed wait needs to say."""
    events = kube.kubectl("get", "events", "-n", NAMESPACE, check=False)
    deployment = kube.kubectl("describe", "deployment", "-n", NAMESPACE, check=False)
    if pod is None:
        return f"no operator Pod\n{deployment[-3000:]}\n{events[-3000:]}"
    name = pod["metadata"]["name"]
    log = kube.kubectl("logs", "-n", NAMESPACE, name, "--tail=60", check=False)
    previous = kube.kubectl("logs", "-n", NAMESPACE, name, "--previous", "--tail=60", check=False)
    status = json.dumps(pod.get("status", {}), indent=1)[-3000:]
    return f"{status}\n--- events\n{events[-3000:]}\n--- log\n{log}\n--- previous\n{previous}"


@pytest.fixture(scope="module")
def operator_image(image_builder: ImageBuilder) -> BuiltImage:
    return image_builder.build("operator")


@pytest.fixture(scope="module")
def imported(
    real_node: NodeStack,
    operator_image: BuiltImage,
    docker_daemon: DockerDaemon,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, float]:
    """The operator image in the node's containerd; the seconds each step took."""
    tarball = tmp_path_factory.mktemp("images") / "operator.tar"
    started = time.monotonic()
    docker_daemon.save(operator_image.ref, tarball)
    saved = time.monotonic()
    real_node.import_image(tarball)  # again, when dev mode's tests imported it first
    done = time.monotonic()
    tarball.unlink()
    refs = real_node.image_refs()
    assert f"docker.io/{operator_image.ref}" in refs, refs
    return {"save_s": saved - started, "import_s": done - saved}


@pytest.fixture(scope="module")
def installed(
    kube: Kube,
    imported: dict[str, float],
    operator_image: BuiltImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, float]]:
    """`helm install` of the chart with the image built here; uninstalled at the end."""
    repository, tag = operator_image.ref.rsplit(":", 1)
    values = {
        "image": {"operator": repository, "tag": tag, "pullPolicy": "Never"},
        # A status update every 2 s instead of 10: the test reads it sooner.
        "operator": {"settings": {"tick_seconds": 2, **SMALL_PARTS}},
    }
    path = values_file(values, tmp_path_factory.mktemp("values"), "operator-pod")
    restricted_namespace(kube, NAMESPACE)
    restricted_namespace(kube, MODELS)
    started = time.monotonic()
    try:
        kube.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(path))
        deadline = started + 120
        pod = operator_pod(kube)
        while not is_ready(pod):
            if time.monotonic() > deadline:
                pytest.fail(f"the operator Pod not Ready in 120 s:\n{why_not_ready(kube, pod)}")
            time.sleep(0.5)
            pod = operator_pod(kube)
        yield {"ready_s": time.monotonic() - started, **imported}
    finally:
        # Models first: their parts are the operator's to delete.
        kube.kubectl("delete", "dynamicmodels", "--all", "-n", MODELS, "--timeout=60s", check=False)
        kube.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
        kube.kubectl("delete", "namespace", MODELS, NAMESPACE, "--timeout=90s", check=False)


def test_the_operator_pod_becomes_ready_under_restricted(
    installed: dict[str, float], kube: Kube, request: pytest.FixtureRequest
) -> None:
    pod = operator_pod(kube)
    assert pod is not None and is_ready(pod)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "driftline-operator"
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Ready is kopf's health endpoint answering, not only the process running.
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # The chart's RBAC, not more: the operator's account is no cluster admin.
    account = f"system:serviceaccount:{NAMESPACE}:driftline-operator"
    can_i = ["auth", "can-i", "--as", account]
    assert kube.kubectl(*can_i, "patch", "dynamicmodels", "-n", MODELS).strip() == "yes"
    assert kube.kubectl(*can_i, "list", "secrets", "-n", MODELS, check=False).strip() == "no"
    assert kube.kubectl(*can_i, "*", "*", check=False).strip() == "no"
    report(
        request,
        f"image: saved {installed['save_s']:.1f} s, imported into the node "
        f"{installed['import_s']:.1f} s; Pod Ready {installed['ready_s']:.1f} s after "
        "`helm install`",
    )


def test_a_model_without_its_backends_waits_and_the_operator_stays_up(
    installed: dict[str, float],
    kube: Kube,
    real_node: NodeStack,
    request: pytest.FixtureRequest,
) -> None:
    """No Kafka, Redis or MLflow anywhere: the sample's names (`kafka`, `redis`,
    `mlflow`) are no Service the cluster DNS knows."""
    sample = yaml.safe_load(SAMPLE.read_text())
    sample["metadata"]["namespace"] = MODELS
    sample["spec"]["training"] = {"mode": "off"}
    name = sample["metadata"]["name"]
    status = apply_model(kube, sample, MODELS)
    assert status.get("phase"), why_not_ready(kube, operator_pod(kube))
    # A few more ticks: the operator goes on without its backends, and never restarts.
    time.sleep(10)
    status = kube.json("get", "dynamicmodel", name, "-n", MODELS)["status"]
    pod = operator_pod(kube)
    assert is_ready(pod), why_not_ready(kube, pod)
    assert pod is not None
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    assert restarts == 0, why_not_ready(kube, pod)
    report(request, f"model status without backends: {json.dumps(status, sort_keys=True)}")
    # The services image is not on the node (inference's, which the joiner runs too,
    # is when the dev-mode tests ran first, but no backend is a Service here): no part
    # becomes Ready, and the status
    # says the model waits for its parts.
    assert status["phase"] == "Pending", status
    assert status["message"].startswith("waiting for parts: "), status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PartsUnavailable", status
    waiting = {
        p["metadata"]["name"]: [
            (c.get("state", {}).get("waiting") or {}).get(
                "reason", next(iter(c.get("state", {})), "?")
            )
            for c in p["status"].get("containerStatuses", [])
        ]
        for p in kube.json("get", "pods", "-n", MODELS)["items"]
    }
    report(request, f"parts' Pods: {waiting}")
    # Unreachable backends are warnings (once per outage), never a crash.
    log = kube.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"])
    assert "Traceback" not in log, log[-3000:]
    warned = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    assert sum("redis unavailable" in line for line in warned) <= 1, log[-3000:]
    report(request, "operator log, warnings and errors:\n" + "\n".join(warned[:10]))

    table = kube.kubectl("get", "dynamicmodels", "-n", MODELS)
    header, row = table.splitlines()[:2]
    assert header.split() == COLUMNS, table
    assert row.split()[:2] == [name, status["phase"]], table
    report(request, f"kubectl get dynamicmodels:\n{table.rstrip()}")

    assert real_node.node is not None
    memory = next(iter(pod_memory(kube, real_node.node.name, NAMESPACE).values()))
    working_set = memory["workingSetBytes"] / 2**20
    assert 0 < working_set < 512, memory  # under the chart's limit
    report(
        request,
        f"operator memory: working set {working_set:.0f} MiB, RSS "
        f"{memory.get('rssBytes', 0) / 2**20:.0f} MiB",
    )


def converged(kube: Kube, name: str, memory: str, timeout: float = 120) -> tuple[float, str]:
    """Waits until the model's children are exactly what the builders render for it,
    the inference Deployment asks `memory`, and the status observed this generation;
    the seconds it took, or the difference still there after `timeout`."""
    started = time.monotonic()
    why = ""
    while time.monotonic() - started < timeout:
        model = kube.json("get", "dynamicmodel", name, "-n", MODELS)
        wanted = wanted_children(model)
        children = model_children(kube, model)
        generation = model["metadata"]["generation"]
        observed = model.get("status", {}).get("observedGeneration")
        inference = children.get(("Deployment", f"{name}-inference"))
        asked = (
            inference["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            if inference
            else {}
        )
        why = (
            f"missing {sorted(wanted - set(children))}, extra {sorted(set(children) - wanted)}, "
            f"observedGeneration {observed} of {generation}, inference limits {asked}"
        )
        if set(children) == wanted and observed == generation and asked.get("memory") == memory:
            return time.monotonic() - started, why
        time.sleep(0.5)
    return time.monotonic() - started, why


def test_the_operator_killed_mid_reconcile_converges_to_one_child_of_each(
    installed: dict[str, float],
    kube: Kube,
    real_node: NodeStack,
    request: pytest.FixtureRequest,
) -> None:
    """A model with every child the operator renders here (a trainer Deployment and its
    checkpoint claim, the import Job of `spec.model.initial`): the operator's Pod is
    killed (grace 0) as soon as the first child of the new model exists, and again
    right after a spec change. The Pod the Deployment brings back finishes the work:
    exactly the children the builders render, each once, owned by the model, the spec
    change applied, the status's observedGeneration caught up.

    The parts' Pods never become Ready here (the trainer's and drift monitor's image
    is not on the node, the joiner's and inference's only when the dev-mode tests ran
    first, and no backend is), so the model's phase is not Ready: only the objects and
    the status's generation are asserted."""
    name = "steady"
    manifest = yaml.safe_load(SAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": MODELS}
    manifest["spec"]["model"]["initial"] = {"uri": "/models/steady.onnx"}
    manifest["spec"]["inference"] = SMALL_INFERENCE
    assert real_node.plane is not None
    api = real_node.plane.api_client()
    try:
        killed, after = create_and_kill_operator(api, manifest, NAMESPACE)
    finally:
        api.close()
    model = kube.json("get", "dynamicmodel", name, "-n", MODELS)
    seen = len(model_children(kube, model))  # a few more may land before the kill bites
    back = wait_new_operator(kube, NAMESPACE, killed)
    took, why = converged(kube, name, "64Mi")
    assert took < 120, why
    first = (
        f"killed {after:.2f} s after the create ({seen} of {len(wanted_children(model))} "
        f"children written by the time the kill was answered); new operator "
        f"Ready {back:.1f} s after the kill, model converged {took:.1f} s after that"
    )

    # A spec change, and the operator killed right after it: the inference Deployment
    # and its autoscaler change, the children's set stays.
    patch = {"spec": {"inference": {"resources": {"memory": "96Mi"}, "replicas": {"max": 3}}}}
    kube.kubectl(
        "patch", "dynamicmodel", name, "-n", MODELS, "--type=merge", "-p", json.dumps(patch)
    )
    killed = kill_operator(kube, NAMESPACE)
    back = wait_new_operator(kube, NAMESPACE, killed)
    took, why = converged(kube, name, "96Mi")
    assert took < 120, why
    report(
        request,
        f"{first}; after a spec change: killed at once, new operator Ready {back:.1f} s, "
        f"model converged {took:.1f} s after that",
    )

    model = kube.json("get", "dynamicmodel", name, "-n", MODELS)
    assert model["metadata"]["generation"] == 2
    children = model_children(kube, model)
    assert set(children) == wanted_children(model)
    kinds = sorted({kind for kind, _ in children})
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    ), kinds
    for (kind, child), item in children.items():
        owners = [o for o in item["metadata"].get("ownerReferences", []) if o.get("controller")]
        assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
            ("DynamicModel", name, model["metadata"]["uid"])
        ], (kind, child, owners)
    autoscaler = children[("HorizontalPodAutoscaler", f"{name}-inference")]
    assert autoscaler["spec"]["maxReplicas"] == 3, autoscaler["spec"]
    # The import Job: one, never a second one from a reconcile started twice.
    jobs = kube.json("get", "jobs", "-n", MODELS, "-l", f"driftline.io/model={name}")["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    report(request, "children: " + ", ".join(f"{k}/{n}" for k, n in sorted(children)))
