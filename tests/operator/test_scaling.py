"""Who owns `replicas`: an autoscaler when there is one, never both."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.api.parts import INFERENCE, JOINER, TRAINER
from driftline.operator.builders import BuildContext, Capabilities, build_children
from driftline.operator.builders.scaling import autoscaler, fixed_replicas
from driftline.operator.settings import OperatorSettings

from .conftest import ALL, SASL_TLS, sample, scenarios


def by_kind(ctx: BuildContext) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in build_children(ctx).all():
        out.setdefault(m["kind"], []).append(m)
    return out


@pytest.mark.parametrize(("name", "ctx"), sorted(scenarios().items()))
def test_replicas_are_stated_only_where_no_autoscaler_owns_them(
    name: str, ctx: BuildContext
) -> None:
    kinds = by_kind(ctx)
    scaled = {
        m["spec"]["scaleTargetRef"]["name"]
        for kind in ("HorizontalPodAutoscaler", "ScaledObject", "HTTPScaledObject")
        for m in kinds.get(kind, [])
    }
    for deployment in kinds["Deployment"]:
        name_ = deployment["metadata"]["name"]
        assert ("replicas" in deployment["spec"]) != (name_ in scaled), name_


def pods_metric(name: str, value: str) -> dict[str, Any]:
    target = {"type": "AverageValue", "averageValue": value}
    return {"type": "Pods", "pods": {"metric": {"name": name}, "target": target}}


CPU_70 = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
}


@pytest.mark.parametrize(
    ("metric", "target", "expected"),
    [
        ("cpu", 70, CPU_70),
        ("gpu", 80, pods_metric("DCGM_FI_DEV_GPU_UTIL", "80")),
        ("inflight", 8, pods_metric("driftline_inference_inflight_requests", "8")),
        ("rps", 0.5, pods_metric("driftline_inference_requests_per_second", "500m")),
    ],
)
def test_inference_hpa_metric(metric: str, target: float, expected: dict[str, Any]) -> None:
    ctx = BuildContext(
        sample("minimal", inference__autoscaling={"metric": metric, "target": target})
    )
    hpa = autoscaler(ctx, INFERENCE)
    assert hpa is not None
    assert hpa["spec"]["metrics"] == [expected]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)


def test_inference_gives_pods_back_after_its_scale_down_window() -> None:
    """Scale-up reacts at once; scale-down waits `scaleDownSeconds` of low load (300
    by default, as the HPA's own default); workers keep the default."""
    default = autoscaler(BuildContext(sample("minimal")), INFERENCE)
    assert default is not None
    assert default["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert default["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    quick = BuildContext(sample("minimal", inference__autoscaling={"scaleDownSeconds": 20}))
    hpa = autoscaler(quick, INFERENCE)
    assert hpa is not None
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 20
    worker = autoscaler(
        BuildContext(
            sample(
                "minimal",
                kafka__partitions=4,
                inference__autoscaling={"scaleDownSeconds": 20},
            ),
            OperatorSettings.model_construct(),
            Capabilities(),
        ),
        JOINER,
    )
    assert worker is not None
    assert worker["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_fixed_inference_replicas_have_no_hpa() -> None:
    ctx = BuildContext(sample("minimal", inference__replicas={"min": 3, "max": 3}))
    assert fixed_replicas(ctx, INFERENCE) == 3
    assert autoscaler(ctx, INFERENCE) is None


def test_zero_min_replicas_keeps_one_pod_under_the_hpa() -> None:
    ctx = BuildContext(sample("minimal", inference__replicas={"min": 0, "max": 5}))
    hpa = autoscaler(ctx, INFERENCE)
    assert hpa is not None and hpa["spec"]["minReplicas"] == 1


def test_workers_scale_on_lag_with_keda_else_on_cpu_within_partitions() -> None:
    model = sample("fraud-detector", kafka__partitions=6)
    keda = autoscaler(
        BuildContext(model, OperatorSettings.model_construct(), ALL, SASL_TLS), JOINER
    )
    assert keda is not None and keda["kind"] == "ScaledObject"
    assert keda["spec"]["maxReplicaCount"] == 6
    triggers = {t["metadata"]["topic"]: t for t in keda["spec"]["triggers"]}
    assert set(triggers) == {"fraud.predictions", "fraud.outcomes"}
    for trigger in triggers.values():
        assert trigger["metadata"]["consumerGroup"] == "driftline-fraud-detector-joiner"
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"
        assert trigger["authenticationRef"] == {"name": "fraud-detector-kafka"}
    hpa = autoscaler(
        BuildContext(model, OperatorSettings.model_construct(), Capabilities()), JOINER
    )
    assert hpa is not None and hpa["kind"] == "HorizontalPodAutoscaler"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)


def test_the_trainer_is_one_replica_and_never_two_at_once() -> None:
    ctx = BuildContext(sample("fraud-detector", kafka__partitions=12), capabilities=ALL)
    assert fixed_replicas(ctx, TRAINER) == 1
    assert autoscaler(ctx, TRAINER) is None
    trainer = next(
        m
        for m in build_children(ctx).namespaced
        if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("trainer")
    )
    assert trainer["spec"]["strategy"] == {"type": "Recreate"}


def test_a_single_partition_needs_no_worker_autoscaler() -> None:
    ctx = BuildContext(sample("minimal", kafka__partitions=1))
    assert fixed_replicas(ctx, JOINER) == 1
    assert autoscaler(ctx, JOINER) is None


def test_keda_without_credentials_has_no_trigger_authentication() -> None:
    kinds = by_kind(BuildContext(sample("minimal"), capabilities=ALL))
    assert "TriggerAuthentication" not in kinds
    for scaled in kinds["ScaledObject"]:
        for trigger in scaled["spec"]["triggers"]:
            assert "authenticationRef" not in trigger and "sasl" not in trigger["metadata"]
