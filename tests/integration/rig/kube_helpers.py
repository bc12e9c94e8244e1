"""Small helpers for tests against the rig's control plane: wait for a condition,
install a CRD and wait until the API server serves it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


def install_crd(dyn: DynamicClient, manifest: dict[str, Any]) -> Any:
    """Create (or re-apply) a CRD, wait until it is Established, return its resource."""
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    name = manifest["metadata"]["name"]
    dyn.server_side_apply(
        crds, body=manifest, field_manager="driftline-tests", force_conflicts=True
    )

    def established() -> bool:
        conditions = crds.get(name=name).to_dict().get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    eventually(established, 30, f"CRD {name} Established")
    group, kind = manifest["spec"]["group"], manifest["spec"]["names"]["kind"]
    version = next(v["name"] for v in manifest["spec"]["versions"] if v.get("storage"))

    def discovered() -> Any:
        try:
            dyn.resources.invalidate_cache()
            return dyn.resources.get(api_version=f"{group}/{version}", kind=kind)
        except ResourceNotFoundError:
            return None

    return eventually(discovered, 30, f"{kind} served by the API server")
