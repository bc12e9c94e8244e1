"""What the real-pod suite's tests share: kubectl and helm as the rig's admin, a
namespace under the restricted Pod Security Standard, a Pod's readiness (and a wait
for a model part's Pods to be Ready), a line in the test report, and the kubelet's
memory summary of a namespace's Pods."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import Tools


def report(request: pytest.FixtureRequest, line: str, tag: str = "operator pod") -> None:
    """A line in the test output (also without -s), and in the JUnit properties."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[{tag}] {line}")
    properties = getattr(request.node, "user_properties", None)  # a test's, not a module's
    if properties is not None:
        properties.append((tag.replace(" ", "-"), line))


class Kube:
    """kubectl and helm as the rig's admin, with a failure that says what went wrong."""

    def __init__(self, tools: Tools, kubeconfig: Path) -> None:
        self.tools = tools
        self.kubeconfig = str(kubeconfig)

    def _run(self, argv: list[str], stdin: str | None, timeout: float, check: bool) -> str:
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv[2:5])} ...: {result.stderr.strip()}")
        return result.stdout

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        argv = [self.tools["kubectl"], "--kubeconfig", self.kubeconfig, *args]
        return self._run(argv, stdin, 180, check)

    def helm(self, *args: str, check: bool = True) -> str:
        argv = [self.tools["helm"], "--kubeconfig", self.kubeconfig, *args]
        return self._run(argv, None, 300, check)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))


def restricted_namespace(kube: Kube, name: str) -> None:
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")


def is_ready(pod: dict[str, Any] | None) -> bool:
    conditions = (pod or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_memory(kube: Kube, node: str, namespace: str) -> dict[str, dict[str, Any]]:
    """The kubelet's summary (stats/summary) of each Pod of `namespace`: the memory of
    its first container, by the Pod's name."""
    summary = json.loads(kube.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/stats/summary"))
    return {
        pod["podRef"]["name"]: pod["containers"][0]["memory"]
        for pod in summary["pods"]
        if pod["podRef"]["namespace"] == namespace and pod.get("containers")
    }


def apply_model(kube: Kube, manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
    """`kubectl apply` of a DynamicModel; its status once the operator gave it a phase
    (an empty status after 60 s)."""
    import yaml

    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline and not status.get("phase"):
        status = kube.json("get", "dynamicmodel", name, "-n", namespace).get("status", {})
        time.sleep(1)
    return status


OPERATOR_SELECTOR = "app.kubernetes.io/name=driftline-operator"
# Operator settings for the chart's values: the trainer's Pods (their image, the
# services image, is not on the node) ask next to nothing, so that the node's CPUs (2
# in CI) keep room for the operator's Pod and the ones a test runs. The joiner and the
# drift monitor (on its default scipy backend) run where the inference image is
# imported (their image): little CPU, and memory enough for them (the joiner 62 MiB at
# its peak under the demo's load, docs/operator.md; the drift monitor's, measured by
# test_drift_pod.py, well under its 512Mi).
SMALL_PARTS = {
    "trainer_resources": {"cpu": "10m", "memory": "64Mi", "tmp": "64Mi"},
    "joiner_resources": {"cpu": "10m", "memory": "256Mi", "tmp": "64Mi"},
    "drift_resources": {"cpu": "10m", "memory": "512Mi", "tmp": "64Mi"},
}
# A model's inference that never runs (no image on the node), as small.
SMALL_INFERENCE = {"resources": {"cpu": "10m", "memory": "64Mi"}}


def operator_pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """The operator's Pods that are not being deleted, oldest first."""
    pods = kube.json("get", "pods", "-n", namespace, "-l", OPERATOR_SELECTOR)["items"]
    alive = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return sorted(alive, key=lambda p: p["metadata"]["creationTimestamp"])


def kill_operator(kube: Kube, namespace: str) -> str:
    """Deletes the operator's Pod with no grace (SIGKILL, whatever it was doing); the
    uid of the Pod killed."""
    pods = operator_pods(kube, namespace)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    name = pods[0]["metadata"]["name"]
    kube.kubectl(
        "delete", "pod", name, "-n", namespace, "--grace-period=0", "--force", "--wait=false"
    )
    return str(pods[0]["metadata"]["uid"])


def create_and_kill_operator(
    api: Any, model: dict[str, Any], operator_namespace: str, timeout: float = 60
) -> tuple[str, float]:
    """Creates the DynamicModel `model` and, as soon as its first child exists (a
    ServiceAccount, the first kind the operator writes), deletes the operator's Pod
    with no grace: the reconcile is then under way. Over the official Python client
    (`api`, a `kubernetes.client.ApiClient`), which polls every few milliseconds where
    kubectl takes a process start. The uid of the Pod killed, and the seconds from the
    create to the kill."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api)  # the client's optional fields, unchecked
    pods = core.list_namespaced_pod(operator_namespace, label_selector=OPERATOR_SELECTOR).items
    assert len(pods) == 1, [p.metadata.name for p in pods]
    namespace, name = model["metadata"]["namespace"], model["metadata"]["name"]
    group, version = model["apiVersion"].split("/")
    started = time.monotonic()
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        group, version, namespace, "dynamicmodels", model
    )
    selector = f"driftline.io/model={name}"
    while not core.list_namespaced_service_account(namespace, label_selector=selector).items:
        assert time.monotonic() - started < timeout, f"no child of {name} in {timeout:.0f} s"
        time.sleep(0.005)
    core.delete_namespaced_pod(pods[0].metadata.name, operator_namespace, grace_period_seconds=0)
    return str(pods[0].metadata.uid), time.monotonic() - started


def wait_new_operator(kube: Kube, namespace: str, killed: str, timeout: float = 120) -> float:
    """Waits until a Pod other than `killed` (a uid) is the operator and Ready; the
    seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pods = [p for p in operator_pods(kube, namespace) if p["metadata"]["uid"] != killed]
        if pods and is_ready(pods[-1]):
            return time.monotonic() - started
        time.sleep(0.25)
    events = kube.kubectl("get", "events", "-n", namespace, check=False)
    raise AssertionError(f"no new operator Pod Ready in {timeout:.0f} s:\n{events[-3000:]}")


def wanted_children(model: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every object the operator's builders render for `model` (the
    live object, with its uid) with the default settings and no optional API: what a
    converged reconcile leaves in the model's namespace."""
    from driftline.api import parse_dynamic_model
    from driftline.operator.builders import BuildContext, build_children
    from driftline.operator.settings import OperatorSettings

    keep = ("name", "namespace", "uid", "generation")
    manifest = {
        "apiVersion": model["apiVersion"],
        "kind": model["kind"],
        "metadata": {k: v for k, v in model["metadata"].items() if k in keep},
        "spec": model["spec"],
    }
    ctx = BuildContext(parse_dynamic_model(manifest), OperatorSettings.model_construct())
    children = build_children(ctx)
    assert not children.cluster, "a cluster-scoped child needs an optional API"
    return {(m["kind"], m["metadata"]["name"]) for m in children.namespaced}


def model_children(kube: Kube, model: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of a kind the operator writes, in the model's namespace, that names
    the model in its labels or its owner references; by (kind, name)."""
    from driftline.operator.kinds import CHILD_KINDS

    namespace = model["metadata"]["namespace"]
    name, uid = model["metadata"]["name"], model["metadata"]["uid"]
    kinds = [k for k in CHILD_KINDS if k.namespaced and k.capability is None]
    resources = ",".join(f"{k.plural}.{k.group}" if k.group else k.plural for k in kinds)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for item in kube.json("get", resources, "-n", namespace)["items"]:
        meta = item["metadata"]
        owners = {o["uid"] for o in meta.get("ownerReferences", [])}
        if meta.get("labels", {}).get("driftline.io/model") == name or uid in owners:
            found[(item["kind"], meta["name"])] = item
    return found


def part_pods(kube: Kube, namespace: str, model: str, part: str) -> list[dict[str, Any]]:
    """The model's Pods of `part` that are not being deleted, oldest first."""
    selector = f"driftline.io/model={model},app.kubernetes.io/component={part}"
    pods = kube.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    alive = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return sorted(alive, key=lambda p: p["metadata"]["creationTimestamp"])


def wait_part_ready(
    kube: Kube,
    namespace: str,
    model: str,
    part: str,
    *,
    count: int,
    timeout: float,
    other_than: str = "",
) -> float:
    """Waits until `count` Pods of the model's `part` (none of them the uid
    `other_than`) are Ready and no other is left but ones being deleted; the seconds it
    took. A timeout fails the test with the namespace's events and the Pods' logs."""
    started = time.monotonic()
    while True:
        pods = [
            p for p in part_pods(kube, namespace, model, part) if p["metadata"]["uid"] != other_than
        ]
        if len(pods) == count and all(is_ready(p) for p in pods):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            events = kube.kubectl("get", "events", "-n", namespace, check=False)
            logs = [
                kube.kubectl(
                    "logs", "-n", namespace, p["metadata"]["name"], "--tail=40", check=False
                )
                for p in pods
            ]
            pytest.fail(
                f"{count} {part} Pod(s) not Ready in {timeout:.0f} s:\n{events[-3000:]}\n"
                + "\n---\n".join(logs)
            )
        time.sleep(0.5)
