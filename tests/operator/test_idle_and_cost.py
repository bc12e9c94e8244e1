"""Idle parts scale to zero where KEDA can wake them; cost labels, spot and GPU caps."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.api import DynamicModel
from driftline.api.parts import DRIFT, INFERENCE, JOINER, TRAINER
from driftline.api.resource import SpecError, parse_dynamic_model
from driftline.operator.builders import BuildContext, Capabilities, build_children
from driftline.operator.builders.scaling import (
    autoscaler,
    fixed_replicas,
    idle_scaling_note,
    inference_max_replicas,
)

from .conftest import ALL, sample

IDLE = {"idle": {"afterSeconds": 600}}
KEDA = Capabilities(keda=True)
KEDA_HTTP = Capabilities(keda=True, keda_http=True)


def idle_model(**changes: Any) -> DynamicModel:
    return sample("minimal", scaling=IDLE, **changes)


@pytest.mark.parametrize("part", [JOINER, DRIFT, TRAINER])
def test_idle_workers_get_a_scaled_object_from_zero(part: Any) -> None:
    ctx = BuildContext(idle_model(), capabilities=KEDA)
    scaled = autoscaler(ctx, part)
    assert scaled is not None and scaled["kind"] == "ScaledObject"
    spec = scaled["spec"]
    assert spec["minReplicaCount"] == 0
    assert spec["cooldownPeriod"] == 600
    assert spec["maxReplicaCount"] == (1 if part is TRAINER else 3)
    assert fixed_replicas(ctx, part) is None
    topics = {t["metadata"]["topic"] for t in spec["triggers"]}
    assert len(topics) == len(part.consumes)
    for trigger in spec["triggers"]:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == part.group_id("churn")
        assert meta["activationLagThreshold"] == "0"
        # A new group without offsets counts as lag: one consumer starts and commits.
        assert meta["scaleToZeroOnInvalidOffset"] == "false"
        assert "allowIdleConsumers" not in meta  # never more consumers than partitions


def test_without_idle_the_trainer_stays_one_fixed_replica() -> None:
    ctx = BuildContext(sample("minimal"), capabilities=KEDA)
    assert fixed_replicas(ctx, TRAINER) == 1
    assert autoscaler(ctx, TRAINER) is None
    joiner = autoscaler(ctx, JOINER)
    assert joiner is not None and joiner["spec"]["minReplicaCount"] == 1


def test_idle_without_keda_keeps_one_of_everything_and_says_so() -> None:
    ctx = BuildContext(idle_model())
    assert fixed_replicas(ctx, TRAINER) == 1
    kinds = {m["kind"] for m in build_children(ctx).all()}
    assert "ScaledObject" not in kinds and "HTTPScaledObject" not in kinds
    note = idle_scaling_note(ctx)
    assert note is not None and "KEDA is not installed" in note


def test_inference_keeps_its_minimum_without_the_http_add_on() -> None:
    ctx = BuildContext(idle_model(), capabilities=KEDA)
    hpa = autoscaler(ctx, INFERENCE)
    assert hpa is not None and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["minReplicas"] == 1
    note = idle_scaling_note(ctx)
    assert note is not None and "HTTP add-on" in note


def test_inference_scales_from_zero_through_the_http_add_on() -> None:
    ctx = BuildContext(idle_model(), capabilities=KEDA_HTTP)
    scaled = autoscaler(ctx, INFERENCE)
    assert scaled is not None and scaled["kind"] == "HTTPScaledObject"
    assert scaled["spec"]["replicas"] == {"min": 0, "max": 4}
    assert scaled["spec"]["scaledownPeriod"] == 600
    assert scaled["spec"]["scaleTargetRef"]["service"] == "churn-inference"
    assert idle_scaling_note(ctx) is None
    # The add-on makes its own ScaledObject: no HPA may fight it.
    kinds = [m["kind"] for m in build_children(ctx).all()]
    assert "HorizontalPodAutoscaler" not in kinds


def gpu_model(cap: int | None, low: int = 1, high: int = 20) -> DynamicModel:
    return sample(
        "minimal",
        inference__resources={"cpu": "1", "memory": "1Gi", "gpu": 2},
        inference__replicas={"min": low, "max": high},
        cost={"maxGpus": cap} if cap is not None else {},
    )


def test_gpu_cap_limits_the_autoscaler_and_the_node_pool() -> None:
    ctx = BuildContext(gpu_model(7), capabilities=ALL)
    assert inference_max_replicas(ctx) == 3  # 3 pods x 2 GPUs <= 7
    hpa = autoscaler(ctx, INFERENCE)
    assert hpa is not None and hpa["spec"]["maxReplicas"] == 3
    assert inference_max_replicas(BuildContext(gpu_model(None))) == 20


def test_gpu_cap_below_the_minimum_is_refused() -> None:
    manifest = gpu_model(None, low=4).to_manifest()
    manifest["spec"]["cost"] = {"maxGpus": 6}
    with pytest.raises(SpecError, match=r"cost\.maxGpus"):
        parse_dynamic_model(manifest)


def pod_labels(ctx: BuildContext, kind: str = "Deployment") -> dict[str, dict[str, str]]:
    return {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["labels"]
        for m in build_children(ctx).all()
        if m["kind"] == kind
    }


def test_every_pod_carries_model_part_and_team() -> None:
    ctx = BuildContext(sample("minimal", cost={"team": "growth"}))
    for name, labels in pod_labels(ctx).items():
        assert labels["driftline.io/model"] == "churn"
        assert name.endswith(labels["driftline.io/part"])
        assert labels["driftline.io/team"] == "growth"


def test_the_models_own_labels_never_reach_the_pods() -> None:
    """A label change on the DynamicModel must not roll every pod."""
    manifest = sample("minimal").to_manifest()
    manifest["metadata"]["labels"] = {"team": "search"}
    ctx = BuildContext(parse_dynamic_model(manifest))
    assert all("driftline.io/team" not in v for v in pod_labels(ctx).values())


def spec_of(ctx: BuildContext, part: str) -> dict[str, Any]:
    for m in build_children(ctx).all():
        if m["kind"] == "Deployment" and m["metadata"]["name"] == f"churn-{part}":
            pod: dict[str, Any] = m["spec"]["template"]["spec"]
            return pod
    raise AssertionError(part)


def test_spot_only_for_the_trainer_only_when_asked_and_with_karpenter() -> None:
    spot = sample("minimal", cost={"spotTrainer": True})
    trainer = spec_of(BuildContext(spot, capabilities=ALL), "trainer")
    assert trainer["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert trainer["tolerations"][0]["value"] == "spot"
    assert "nodeSelector" not in spec_of(BuildContext(spot, capabilities=ALL), "joiner")
    assert "nodeSelector" not in spec_of(BuildContext(spot), "trainer")
    assert "nodeSelector" not in spec_of(
        BuildContext(sample("minimal"), capabilities=ALL), "trainer"
    )
