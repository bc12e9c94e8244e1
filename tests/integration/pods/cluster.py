"""What the real-pod suite's tests share: kubectl and helm as the rig's admin, a
namespace under the restricted Pod Security Standard, a Pod's readiness, a line in
the test report, and the kubelet's memory summary of a namespace's Pods."""

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
