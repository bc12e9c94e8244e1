"""Fixtures for the proofs that the test rig is real: a dynamic client, a CRD
installer, and a dedicated Apache Kafka broker the restart test may stop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from driftline.common.infra import apache_kafka

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


@pytest.fixture(scope="session")
def dyn(kube_client: Any, tmp_path_factory: pytest.TempPathFactory) -> DynamicClient:
    """The official client's dynamic API: any kind, CRDs included."""
    cache = tmp_path_factory.mktemp("discovery") / "discovery.json"
    return DynamicClient(kube_client, cache_file=str(cache))


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


@pytest.fixture(scope="module")
def apache_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[apache_kafka.ApacheKafkaBroker]:
    """An Apache Kafka broker of this module's own: the restart test stops it."""
    if os.environ.get("DRIFTLINE_RIG", "").lower() == "off":
        pytest.skip("DRIFTLINE_RIG=off: Apache Kafka is not started")
    if not apache_kafka.available():
        pytest.fail("Apache Kafka is not built: run `make rig` (`make test` builds it first)")
    root = tmp_path_factory.mktemp("apache-kafka")
    broker = apache_kafka.ApacheKafkaBroker(data_dir=root / "data", log_path=root / "kafka.log")
    with broker:
        yield broker


@pytest.fixture
def samples() -> Path:
    return Path(__file__).resolve().parents[3] / "manifests" / "samples"
