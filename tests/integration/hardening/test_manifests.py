"""The real API server enforces Pod Security `restricted` on every pod Driftline renders.

Builds on `tests/hardening/test_manifests.py`, which checks the same pods against
the standard's rules as written; here kube-apiserver's own PodSecurity admission
judges them. Each workload's pod template (the operator's children in every golden
scenario, the operator itself, the chart's dev servers) is created with
`dryRun=All` in a namespace labelled `pod-security.kubernetes.io/enforce: restricted`
on the test rig's control plane: admitted, or refused with the rule it breaks. A
privileged pod is refused in the same namespace, so the enforcement is known to be on.
"""

from __future__ import annotations

import copy
import json
import time
import urllib.error
from typing import Any

import pytest

from driftline_testing import kube as kube_infra
from tests.deploy.chart import VALUE_SETS, install_tools, render
from tests.hardening.test_manifests import operator_sets, pods

pytestmark = [pytest.mark.integration, pytest.mark.rig]


def dry_run(kube: kube_infra.ControlPlane, namespace: str, pod: dict[str, Any]) -> str | None:
    """None when admitted, else the API server's reason."""
    try:
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)
    except urllib.error.HTTPError as exc:
        return f"{exc.code}: {json.loads(exc.read() or b'{}').get('message', '')}"
    return None


def test_every_rendered_pod_is_admitted_under_restricted(
    kube: kube_infra.ControlPlane, unique: str, tmp_path: Any
) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": unique, "labels": labels}})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # pods need the namespace's default account
            try:
                kube.request("GET", f"/api/v1/namespaces/{unique}/serviceaccounts/default")
                break
            except urllib.error.HTTPError:
                time.sleep(0.1)
        sets = operator_sets()
        sets["chart/dev-and-monitoring"] = render(
            install_tools(), VALUE_SETS["dev-and-monitoring"], tmp_path, "dev"
        )
        refused = {}
        admitted = 0
        for where, docs in sets.items():
            for name, metadata, spec in pods(docs):
                body = copy.deepcopy(spec)
                body["serviceAccountName"] = "default"  # their own accounts are not created here
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"generateName": "check-", "labels": metadata.get("labels", {})},
                    "spec": body,
                }
                reason = dry_run(kube, unique, pod)
                if reason is None:
                    admitted += 1
                else:
                    refused[f"{where}: {name}"] = reason
        assert not refused, json.dumps(refused, indent=1)
        assert admitted >= 20

        privileged = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "privileged"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}
                ]
            },
        }
        reason = dry_run(kube, unique, privileged)
        assert reason is not None and "restricted" in reason, reason
    finally:
        kube.delete_namespace(unique)
