"""Every manifest the operator renders is valid for Kubernetes 1.29 and the newest schema."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from driftline.operator.builders import build_children
from driftline.operator.builders.install import operator_manifests

from .conftest import defaults, scenarios
from .schemas import VERSIONS, has_schema, validate, validate_type

RENDERED = [
    (f"{name}/{m['kind']}/{m['metadata']['name']}", m)
    for name, ctx in scenarios().items()
    for m in build_children(ctx).all()
]
INSTALL = [
    (f"install/{m['kind']}/{m['metadata']['name']}", m) for m in operator_manifests(defaults())
]
INSTALL += [
    (f"install-namespaced/{m['kind']}/{m['metadata']['name']}", m)
    for m in operator_manifests(defaults(), watch=["ml", "fraud"])
]
CRD_KINDS = {
    "ScaledObject",
    "TriggerAuthentication",
    "HTTPScaledObject",
    "ServiceMonitor",
    "NodePool",
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("label", "manifest"),
    [(label, m) for label, m in RENDERED + INSTALL if m["kind"] not in CRD_KINDS],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_manifest_validates_strictly(label: str, manifest: dict[str, Any], version: str) -> None:
    validate(manifest, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_crd_kinds_have_no_kubernetes_schema(version: str) -> None:
    """The kinds `test_crd_kinds_parts` checks part by part have no schema of their own."""
    crd_kinds = [m for _, m in RENDERED + INSTALL if m["kind"] in CRD_KINDS]
    assert crd_kinds
    for manifest in crd_kinds:
        assert not has_schema(manifest, version), manifest["kind"]


@pytest.mark.parametrize("version", VERSIONS)
def test_crd_kinds_parts(version: str) -> None:
    """What of the CRD kinds is made of Kubernetes types is validated as those types."""
    seen = set()
    for _, m in RENDERED:
        kind = m["kind"]
        if kind not in CRD_KINDS:
            continue
        seen.add(kind)
        validate_type(m["metadata"], "objectmeta-meta-v1", version)
        spec = m["spec"]
        if kind == "ScaledObject":
            validate_type(
                spec["scaleTargetRef"], "crossversionobjectreference-autoscaling-v2", version
            )
            assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
            assert spec["minReplicaCount"] or spec["cooldownPeriod"] > 0
            for trigger in spec["triggers"]:
                assert trigger["type"] == "kafka"
                assert all(isinstance(v, str) for v in trigger["metadata"].values())
        elif kind == "HTTPScaledObject":
            target = spec["scaleTargetRef"]
            validate_type(
                {k: target[k] for k in ("apiVersion", "kind", "name")},
                "crossversionobjectreference-autoscaling-v2",
                version,
            )
            assert isinstance(target["service"], str) and isinstance(target["port"], int)
            assert 0 <= spec["replicas"]["min"] <= spec["replicas"]["max"]
            assert len(spec["scalingMetric"]) == 1
        elif kind == "ServiceMonitor":
            validate_type(spec["selector"], "labelselector-meta-v1", version)
        elif kind == "NodePool":
            template = spec["template"]["spec"]
            for taint in template.get("taints", []):
                validate_type(taint, "taint-v1", version)
            for requirement in template["requirements"]:
                validate_type(requirement, "nodeselectorrequirement-v1", version)
            validate_type(spec["template"]["metadata"], "objectmeta-meta-v1", version)
        elif kind == "TriggerAuthentication":
            for ref in spec["secretTargetRef"]:
                assert set(ref) == {"parameter", "name", "key"}
    assert seen == CRD_KINDS


def test_strict_validation_catches_an_unknown_field() -> None:
    """The check above would catch a typo in a builder."""
    deployment = next(m for _, m in RENDERED if m["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, VERSIONS[0])
