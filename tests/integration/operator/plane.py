"""The control plane a scenario runs against, and the steps scenarios share.

`ControlPlane.real` is True for the test rig (kube-apiserver, controller-manager,
scheduler, etcd, KWOK nodes): validation, CEL, server-side apply with field
managers, garbage collection, scheduling and Deployment rollouts are all real.
It is False for kmock's emulator (the fallback), where scenarios that need those
are skipped and the test stands in for the Deployment controller where it must.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from driftline.api.crd import dynamic_model_crd
from driftline.operator.handlers import register
from driftline.operator.kube import Kube, KubeError
from driftline.operator.settings import OperatorSettings, PartResources

T = TypeVar("T")
DM = "/apis/driftline.io/v1alpha1"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
SMALL = PartResources(cpu="50m", memory="64Mi", tmp="64Mi")


@dataclass
class ControlPlane:
    kubeconfig: Path
    real: bool
    kube: Kube
    emulator: Any = None
    logs: Path = field(default_factory=lambda: Path("."))
    component_logs: Path | None = None  # the rig's controller-manager, scheduler, kwok logs

    def require_real(self, what: str) -> None:
        if not self.real:
            pytest.skip(f"needs the real control plane (test rig): {what}")

    # --- objects ------------------------------------------------------------------------

    def install_crd(self) -> None:
        if not self.real:
            return  # the emulator serves the resource from its discovery table
        crd = dynamic_model_crd()
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        self.kube.apply(path, crd, "driftline-tests")

        def established() -> bool:
            got = self.kube.get(path) or {}
            conditions = (got.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_for(established, 30, "the CRD to be established")
        # Discovery of the new group can lag the Established condition.
        wait_for(lambda: self.kube.list(f"{DM}/dynamicmodels") is not None, 60, "the CRD to serve")

    def namespace(self, name: str) -> str:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        with contextlib.suppress(Exception):
            self.kube.request("POST", "/api/v1/namespaces", body=body)
        return name

    def create_model(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ns = manifest["metadata"]["namespace"]
        return self.kube.request("POST", f"{DM}/namespaces/{ns}/dynamicmodels", body=manifest)

    def model(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(f"{DM}/namespaces/{ns}/dynamicmodels/{name}")

    def patch_model(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.kube.merge_patch(f"{DM}/namespaces/{ns}/dynamicmodels/{name}", patch)

    def delete_model(self, ns: str, name: str) -> None:
        self.kube.delete(f"{DM}/namespaces/{ns}/dynamicmodels/{name}")

    def status(self, ns: str, name: str) -> dict[str, Any]:
        return (self.model(ns, name) or {}).get("status") or {}

    def children(self, collection: str, ns: str, model: str) -> list[dict[str, Any]]:
        return self.kube.list(collection.format(ns=ns), f"driftline.io/model={model}")

    def serving(self, ns: str, name: str) -> dict[str, Any] | None:
        """The model's status once its phase is Serving, else None."""
        self.stand_in_for_deployment_controller(ns, name)
        status = self.status(ns, name)
        return status if status.get("phase") == "Serving" else None

    def wait_serving(
        self, ns: str, name: str, timeout: float = 120, what: str = "phase Serving"
    ) -> dict[str, Any]:
        """Waits for phase Serving; a timeout names what the model and its parts showed."""
        return wait_for(
            lambda: self.serving(ns, name), timeout, what, describe=lambda: self.parts(ns, name)
        )

    def parts(self, ns: str, name: str) -> dict[str, Any]:
        """What a wait for Serving saw last: the model's generation and status, each
        Deployment's and ReplicaSet's replicas, the Pods that are not ready (and why),
        and on the rig the last lines its components logged about the namespace."""
        model = self.model(ns, name) or {}
        status = model.get("status") or {}
        deployments = {
            d["metadata"]["name"]: d.get("status", {}).get("availableReplicas", 0)
            for d in self.children(DEPLOYMENTS, ns, name)
        }
        pods = {
            p["metadata"]["name"]: [p["status"].get("phase")]
            + [
                f"{c['type']}={c['status']} {c.get('reason', '')} {c.get('message', '')}".strip()
                for c in p["status"].get("conditions", [])
                if c["status"] != "True"
            ]
            for p in self.kube.list(f"/api/v1/namespaces/{ns}/pods")
            if not _ready(p)
        }
        return {
            "generation": model.get("metadata", {}).get("generation"),
            "observedGeneration": status.get("observedGeneration"),
            "phase": status.get("phase"),
            "message": status.get("message"),
            "conditions": [
                (c.get("type"), c.get("status"), c.get("reason"))
                for c in status.get("conditions", [])
            ],
            "available": deployments,
            "replica sets": {
                r["metadata"]["name"]: {
                    k: r.get("status", {}).get(k, 0)
                    for k in ("replicas", "readyReplicas", "availableReplicas")
                }
                for r in self.kube.list(f"/apis/apps/v1/namespaces/{ns}/replicasets")
            },
            "pods not ready": pods,
            "component logs": self._component_lines(ns),
        }

    def _component_lines(self, ns: str, last: int = 8) -> dict[str, list[str]]:
        if self.component_logs is None:
            return {}
        lines = {}
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            path = self.component_logs / f"{name}.log"
            if path.is_file():
                about = [
                    line[:300]
                    for line in path.read_text(errors="replace").splitlines()
                    if ns in line
                ]
                lines[name] = about[-last:]
        return lines

    def secret(self, ns: str, name: str, data: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": data,
        }
        if not self.real:  # the emulator does not turn stringData into data
            import base64

            body = {
                **body,
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
            body.pop("stringData")
        self.kube.request("POST", f"/api/v1/namespaces/{ns}/secrets", body=body)

    def gpu_pool(self) -> dict[str, Any]:
        """Labels and taints of the rig's simulated GPU nodes (the pool a spec would name)."""
        for node in self.kube.list("/api/v1/nodes"):
            if "nvidia.com/gpu" in node.get("status", {}).get("capacity", {}):
                labels = node["metadata"].get("labels", {})
                pool = {k: v for k, v in labels.items() if "pool" in k or "accelerator" in k}
                tolerations = [
                    {"key": t["key"], "operator": "Exists", "effect": t["effect"]}
                    for t in node["spec"].get("taints", [])
                ]
                return {"labels": pool, "tolerations": tolerations}
        pytest.fail("the rig has no node with nvidia.com/gpu capacity")

    def stand_in_for_deployment_controller(self, ns: str, model: str) -> None:
        """Emulator only: mark the model's Deployments available, as the controller would."""
        if self.real:
            return
        for d in self.children(DEPLOYMENTS, ns, model):
            replicas = d["spec"].get("replicas", 1)
            status = {
                "observedGeneration": d["metadata"]["generation"],
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "updatedReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True"}],
            }
            path = f"/apis/apps/v1/namespaces/{ns}/deployments/{d['metadata']['name']}/status"
            self.kube.merge_patch(path, {"status": status})

    @contextlib.contextmanager
    def optional_apis(self, *apis: tuple[str, str, str, str]) -> Iterator[None]:
        """Serves (group, version, plural, kind) as if their CRDs were installed.

        On the rig: CRDs that accept any spec (the tests check what the operator
        writes, not what KEDA or Prometheus would do with it). On the emulator:
        entries in its discovery table.
        """
        names = []
        for group, version, plural, kind in apis:
            if self.real:
                crd = _stub_crd(group, version, plural, kind)
                names.append(crd["metadata"]["name"])
                self.kube.apply(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{names[-1]}",
                    crd,
                    "driftline-tests",
                )
            else:
                self.emulator.resources[f"{group}/{version}/{plural}"] = {
                    "kind": kind,
                    "namespaced": True,
                    "verbs": ["get", "list", "watch", "create", "patch", "delete"],
                }
        if self.real:
            for group, version, plural, _ in apis:
                wait_for(
                    lambda g=group, v=version, p=plural: (
                        self.kube.get(f"/apis/{g}/{v}/{p}") is not None
                    ),
                    30,
                    f"{plural}.{group} to be served",
                )
        try:
            yield
        finally:
            for group, version, plural, _ in apis:
                if self.real:
                    self.kube.delete(
                        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{group}"
                    )
                else:  # as deleting a CRD deletes its objects (discovery lists their kinds)
                    del self.emulator.resources[f"{group}/{version}/{plural}"]
                    for key in [k for k in self.emulator.objects if k[0].plural == plural]:
                        del self.emulator.objects[key]

    # --- the operator -------------------------------------------------------------------

    def settings(self, ns: str, **overrides: Any) -> OperatorSettings:
        values: dict[str, Any] = {
            "kubeconfig": self.kubeconfig,
            "namespaces": [ns],
            "tick_seconds": 1.0,
            "retry_seconds": 2.0,
            "capabilities_ttl_seconds": 0.0,
            "image_pull_policy": "Never",
            # No volume provisioner on the rig; one scenario binds a claim on purpose.
            "trainer_checkpoints": "ephemeral",
            # Many models share the rig's few simulated nodes.
            **{f"{part}_resources": SMALL for part in ("joiner", "trainer", "drift")},
        }
        return OperatorSettings(**{**values, **overrides})

    @contextlib.contextmanager
    def operator(self, ns: str, **overrides: Any) -> Iterator[KopfRunner]:
        """The operator in this process under kopf's test runner, watching `ns`."""
        registry = register(kopf.OperatorRegistry(), self.settings(ns, **overrides))
        args = ["run", "--standalone", "--namespace", ns]
        with KopfRunner(args, registry=registry, timeout=60) as runner:
            yield runner

    @contextlib.contextmanager
    def operator_process(self, ns: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
        """The operator as a process (`python -m driftline.operator`), to be killed."""
        env = {
            **os.environ,
            "DRIFTLINE_OPERATOR_KUBECONFIG": str(self.kubeconfig),
            "DRIFTLINE_OPERATOR_NAMESPACES": ns,
            "DRIFTLINE_OPERATOR_TICK_SECONDS": "1",
            "DRIFTLINE_OPERATOR_CAPABILITIES_TTL_SECONDS": "0",
            "DRIFTLINE_OPERATOR_TRAINER_CHECKPOINTS": "ephemeral",
            **{
                f"DRIFTLINE_OPERATOR_{part.upper()}_RESOURCES": SMALL.model_dump_json()
                for part in ("joiner", "trainer", "drift")
            },
        }
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "driftline.operator"], env=env, stdout=out, stderr=out
            )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _stub_crd(group: str, version: str, plural: str, kind: str) -> dict[str, Any]:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
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
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def wait_for(
    check: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.2,
    describe: Callable[[], Any] | None = None,
) -> T:
    """Polls `check` until it returns something truthy; fails the test with `what`
    and, when given, what `describe` returns then (the state the check did not like)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except KubeError as exc:  # not there yet, or the server is still settling
            last = exc
        if last:
            return last
        time.sleep(interval)
    seen = f"; state: {describe()!r}" if describe is not None else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r}){seen}")


def model_manifest(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    """A small valid DynamicModel; `spec` entries replace top-level spec sections."""
    base: dict[str, Any] = yaml.safe_load(
        """
        apiVersion: driftline.io/v1alpha1
        kind: DynamicModel
        spec:
          model: {registry: {trackingUri: "http://127.0.0.1:9", name: test}}
          features: [{name: x1}, {name: x2}, {name: color, type: categorical, hashBuckets: 8}]
          kafka: {bootstrapServers: "127.0.0.1:9", partitions: 2}
          redis: {url: "redis://127.0.0.1:9/0"}
          inference: {replicas: {min: 1, max: 3}, resources: {cpu: 100m, memory: 128Mi}}
        """
    )
    base["metadata"] = {"name": name, "namespace": ns}
    base["spec"].update(spec)
    return base
