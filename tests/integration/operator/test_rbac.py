"""The generated RBAC is enough to run the operator, and refuses what it does not need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.operator.builders.install import NAME, operator_manifests
from driftline.operator.kinds import kind_of
from driftline.operator.kube import Kube, KubeError, load_credentials
from driftline.operator.settings import OperatorSettings

from .plane import ControlPlane, model_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

RBAC_KINDS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
}


def service_account_kubeconfig(plane: ControlPlane, ns: str, folder: Path) -> Path:
    """A kubeconfig that acts as the operator's ServiceAccount (a TokenRequest token)."""
    response = plane.kube.request(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{NAME}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    config = yaml.safe_load(plane.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": response["status"]["token"]}
    path = folder / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_operator_runs_on_its_generated_rbac(
    control_plane: ControlPlane, ns: str, tmp_path: Path
) -> None:
    control_plane.require_real("RBAC authorisation")
    documents = operator_manifests(OperatorSettings.model_construct(), namespace=ns)
    applied: list[str] = []
    try:
        for doc in documents:
            if doc["kind"] not in RBAC_KINDS or not doc["metadata"]["name"].startswith(NAME):
                continue
            path = RBAC_KINDS[doc["kind"]].format(ns=ns, name=doc["metadata"]["name"])
            control_plane.kube.apply(path, doc, "driftline-tests")
            applied.append(path)
        kubeconfig = service_account_kubeconfig(control_plane, ns, tmp_path)
        operator = Kube(load_credentials(kubeconfig))

        # What it must not do: list or watch Secrets, write or read a Pod (it only
        # lists them, to say why a part is not available), write RBAC.
        for method, path, body in [
            ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
            ("GET", f"/api/v1/namespaces/{ns}/pods/any", None),
            ("DELETE", f"/api/v1/namespaces/{ns}/pods/any", None),
            ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", _role()),
        ]:
            with pytest.raises(KubeError) as refused:
                operator.request(method, path, body=body)
            assert refused.value.status == 403, path
        assert operator.get(f"/api/v1/namespaces/{ns}/secrets/absent") is None  # get: allowed
        assert operator.list(f"/api/v1/namespaces/{ns}/pods") == []  # list: allowed

        control_plane.create_model(model_manifest("churn", ns))
        with control_plane.operator(ns, kubeconfig=kubeconfig):
            control_plane.wait_serving(ns, "churn", 120)
        deployment = kind_of({"apiVersion": "apps/v1", "kind": "Deployment"})
        assert len(control_plane.kube.list(deployment.collection(ns))) == 4
        operator.close()
    finally:
        for path in reversed(applied):
            if "/clusterrole" in path:
                control_plane.kube.delete(path)


def _role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "escalated"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }
