"""Every manifest the chart renders is valid Kubernetes (kubernetes-validate --strict)
on the oldest Kubernetes the chart supports and on the newest schema known."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from .chart import VALUE_SETS

pytestmark = pytest.mark.timeout(1800)

OLDEST = "1.29"  # Chart.yaml kubeVersion
NEWEST = ".".join(kubernetes_validate.latest_version().split(".")[:2])
# Kinds of the Prometheus Operator's CRDs: no schema in kubernetes-validate. Their
# fields are checked by the rig's API server against stand-in CRDs, and their
# PromQL by promtool (test_observability.py).
CRD_KINDS = {"PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_manifests_validate_strictly(
    rendered: dict[str, list[dict[str, Any]]], value_set: str, version: str
) -> None:
    checked = 0
    for doc in rendered[value_set]:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc}")
        checked += 1
    assert checked >= 7
