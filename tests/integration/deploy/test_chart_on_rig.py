"""The chart on the test rig's real API server: every rendered object is accepted by
`kubectl apply --server-side`, its Deployments become Available under the restricted
Pod Security Standard, and the operator, run with the chart's environment and its
ServiceAccount's token (so with exactly the chart's RBAC), reconciles the sample
DynamicModel until it serves.

KWOK's nodes run no containers, so the operator runs here as a process, as the
chart's container would run it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline_testing.kube import ControlPlane
from tests.deploy.chart import CHART, ROOT, Tools, documents, run, values_file

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1800)]

SAMPLE = ROOT / "manifests" / "samples" / "sea-demo.yaml"
# The Prometheus Operator's kinds the chart writes, served by stand-in CRDs that
# accept any spec (the rig has no Prometheus Operator).
MONITORING_KINDS = [("podmonitors", "PodMonitor"), ("prometheusrules", "PrometheusRule")]


class Kubectl:
    def __init__(self, tools: Tools, kubeconfig: Path) -> None:
        self.argv = [tools["kubectl"], "--kubeconfig", str(kubeconfig)]

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 180) -> str:
        result = subprocess.run(
            [*self.argv, *args], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def can_i(self, account: str, verb: str, resource: str, namespace: str) -> bool:
        argv = [*self.argv, "auth", "can-i", verb, resource, "-n", namespace, "--as", account]
        answer = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return answer.stdout.strip() == "yes"

    def apply(self, manifests: str) -> str:
        return self(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=helm",
            "-f",
            "-",
            stdin=manifests,
        )


def _stub_crd(plural: str, kind: str) -> dict[str, Any]:
    group = "monitoring.coreos.com"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"plural": plural, "kind": kind},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def _render(tools: Tools, folder: Path, namespace: str, values: dict[str, Any]) -> str:
    path = values_file(values, folder, namespace)
    argv = [tools["helm"], "template", "driftline", str(CHART), "--namespace", namespace]
    return run([*argv, "--include-crds", "-f", str(path)]).stdout


@pytest.fixture
def chart_namespace(kube: ControlPlane, unique: str, tools: Tools) -> Iterator[str]:
    """The release namespace, under the restricted Pod Security Standard."""
    kubectl = Kubectl(tools, kube.kubeconfig)
    kubectl("create", "namespace", unique)
    kubectl("label", "namespace", unique, "pod-security.kubernetes.io/enforce=restricted")
    try:
        yield unique
    finally:
        kubectl("delete", "namespace", unique, "--wait=false")


@contextlib.contextmanager
def _cluster_objects_removed(kubectl: Kubectl, manifests: str) -> Iterator[None]:
    """Deletes the cluster-scoped objects a test applied (but the shared CRD)."""
    try:
        yield
    finally:
        for doc in documents(manifests):
            if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kubectl(
                    "delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found"
                )


def test_every_rendered_object_is_accepted_and_runs(
    kube: ControlPlane, tools: Tools, chart_namespace: str, tmp_path: Path
) -> None:
    kubectl = Kubectl(tools, kube.kubeconfig)
    for plural, kind in MONITORING_KINDS:
        kubectl.apply(yaml.safe_dump(_stub_crd(plural, kind)))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd",
        *[f"{p}.monitoring.coreos.com" for p, _ in MONITORING_KINDS],
    )
    values = {
        "dev": {"enabled": True},
        "monitoring": {
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboards": {"enabled": True},
        },
    }
    manifests = _render(tools, tmp_path, chart_namespace, values)
    try:
        with _cluster_objects_removed(kubectl, manifests):
            applied = kubectl.apply(manifests)
            assert len(applied.strip().splitlines()) == len(documents(manifests))
            # Pods are admitted under `restricted` and scheduled on KWOK's nodes.
            kubectl(
                "wait",
                "--for=condition=Available",
                "deployment",
                "--all",
                "-n",
                chart_namespace,
                "--timeout=120s",
            )
            deployments = kubectl("get", "deployments", "-n", chart_namespace, "-o", "name").split()
            assert sorted(deployments) == [
                f"deployment.apps/driftline-{n}" for n in ("kafka", "mlflow", "operator", "redis")
            ]
    finally:
        for plural, _ in MONITORING_KINDS:
            kubectl("delete", "crd", f"{plural}.monitoring.coreos.com", "--ignore-not-found")


@contextlib.contextmanager
def _operator_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftline.operator"], env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)  # as the kubelet stops it
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_the_charts_operator_reconciles_the_sample_with_the_charts_rbac(
    kube: ControlPlane, tools: Tools, chart_namespace: str, unique: str, tmp_path: Path
) -> None:
    kubectl = Kubectl(tools, kube.kubeconfig)
    models = f"{unique}-models"
    kubectl("create", "namespace", models)
    values = {
        "operator": {
            "watchNamespaces": [models],
            "settings": {
                # The rig has no volume provisioner, and few simulated nodes.
                "trainer_checkpoints": "ephemeral",
                **{
                    f"{p}_resources": {"cpu": "50m", "memory": "64Mi"}
                    for p in ("joiner", "trainer", "drift")
                },
                "tick_seconds": 1,
                "operator_metrics_port": 0,
            },
        },
    }
    manifests = _render(tools, tmp_path, chart_namespace, values)
    try:
        with _cluster_objects_removed(kubectl, manifests):
            kubectl.apply(manifests)
            crd = "dynamicmodels.driftline.io"
            kubectl("wait", "--for=condition=Established", "crd", crd)
            deployment = next(d for d in documents(manifests) if d["kind"] == "Deployment")
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert container["command"] == ["python", "-m", "driftline.operator"]

            # The chart's ServiceAccount, as the kubelet would mount its token.
            token = kubectl("create", "token", "driftline-operator", "-n", chart_namespace).strip()
            config = yaml.safe_load(kube.kubeconfig.read_text())
            for user in config["users"]:
                user["user"] = {"token": token}
            operator_kubeconfig = tmp_path / "operator.kubeconfig"
            operator_kubeconfig.write_text(yaml.safe_dump(config))
            account = f"system:serviceaccount:{chart_namespace}:driftline-operator"
            assert kubectl.can_i(account, "patch", "dynamicmodels", models)
            assert kubectl.can_i(account, "get", "secrets", models)
            assert not kubectl.can_i(account, "list", "secrets", models)
            assert not kubectl.can_i(account, "patch", "dynamicmodels", chart_namespace)

            env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_OPERATOR_")}
            env.update({e["name"]: e["value"] for e in container["env"]})
            env["DRIFTLINE_OPERATOR_KUBECONFIG"] = str(operator_kubeconfig)

            sample = yaml.safe_load(SAMPLE.read_text())
            sample["metadata"]["namespace"] = models
            kubectl.apply(yaml.safe_dump(sample))
            with _operator_process(env, tmp_path / "operator.log") as process:
                deadline = time.monotonic() + 150
                phase = ""
                while time.monotonic() < deadline and phase != "Serving":
                    assert process.poll() is None, (tmp_path / "operator.log").read_text()[-3000:]
                    phase = kubectl(
                        "get", "dynamicmodel", "sea", "-n", models, "-o", "jsonpath={.status.phase}"
                    )
                    time.sleep(1)
                assert phase == "Serving", (tmp_path / "operator.log").read_text()[-3000:]
            names = kubectl("get", "deployments", "-n", models, "-o", "name").split()
            assert sorted(names) == [
                f"deployment.apps/sea-{p}" for p in ("drift", "inference", "joiner", "trainer")
            ]
            assert process.returncode == 0, "SIGTERM stops the operator cleanly"
    finally:
        kubectl("delete", "namespace", models, "--wait=false")
