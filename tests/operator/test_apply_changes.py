"""A reconcile sends only the children its spec change touched, and lists children
for pruning only when the set it wants changed: the cost of a spec change stays a
few requests per model, whatever the number of models."""

from __future__ import annotations

from typing import Any

from driftline.operator.builders import BuildContext, Capabilities, Children
from driftline.operator.builders.workloads import config_hash
from driftline.operator.controller import Controller
from driftline.operator.settings import OperatorSettings

from .conftest import sample


class CountingCluster:
    """The I/O layer's calls, counted; the builders are the real ones."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.prunes = 0

    def kafka_auth(self, model: Any) -> None:
        return None

    def capabilities(self) -> Capabilities:
        return Capabilities()

    def apply_manifests(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.sent.append([f"{m['kind']}/{m['metadata']['name']}" for m in manifests])
        return manifests

    def prune(self, model: Any, children: Children) -> list[str]:
        self.prunes += 1
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def controller(full_apply_seconds: float = 900.0) -> tuple[Controller, CountingCluster, Clock]:
    settings = OperatorSettings.model_construct(full_apply_seconds=full_apply_seconds)
    cluster, clock = CountingCluster(), Clock()
    return (
        Controller(settings, cluster, backends=None, rollouts=None, clock=clock),  # type: ignore[arg-type]
        cluster,
        clock,
    )


def test_a_new_model_applies_everything_and_prunes_nothing() -> None:
    ctl, cluster, _ = controller()
    applied, pruned = ctl.apply(sample("minimal"), new=True)
    assert applied == len(cluster.sent[0]) > 10
    assert pruned == [] and cluster.prunes == 0


def test_a_spec_change_sends_only_what_it_changed() -> None:
    ctl, cluster, _ = controller()
    ctl.apply(sample("minimal"), new=True)
    applied, _ = ctl.apply(sample("minimal"))
    assert applied == 0 and cluster.prunes == 0  # the same spec again: nothing to send

    changed = sample("minimal", inference__replicas={"min": 1, "max": 9})
    ctl.apply(changed)
    kinds = {s.split("/")[0] for s in cluster.sent[-1]}
    assert "HorizontalPodAutoscaler" in kinds
    assert "ServiceAccount" not in kinds and "NetworkPolicy" not in kinds
    assert cluster.prunes == 0  # the same children are wanted


def test_a_child_no_longer_wanted_is_pruned() -> None:
    ctl, cluster, _ = controller()
    ctl.apply(sample("minimal"), new=True)
    ctl.apply(sample("minimal", training={"mode": "off"}))
    assert cluster.prunes == 1


def test_everything_again_after_a_while_after_a_restart_or_when_asked() -> None:
    ctl, cluster, clock = controller(full_apply_seconds=600)
    total = ctl.apply(sample("minimal"), new=True)[0]
    clock.now += 601
    assert ctl.apply(sample("minimal"))[0] == total and cluster.prunes == 1
    assert ctl.apply(sample("minimal"))[0] == 0
    assert ctl.apply(sample("minimal"), everything=True)[0] == total

    restarted, cluster2, _ = controller()
    assert restarted.apply(sample("minimal"))[0] == total and cluster2.prunes == 1

    always, _, _ = controller(full_apply_seconds=0)
    always.apply(sample("minimal"), new=True)
    assert always.apply(sample("minimal"))[0] == total


def test_a_forgotten_model_starts_over() -> None:
    ctl, _, _ = controller()
    model = sample("minimal")
    total = ctl.apply(model, new=True)[0]
    ctl.rollouts = type("R", (), {"forget": lambda self, m: None})()  # type: ignore[assignment]
    ctl.forget(model)
    assert ctl.apply(model)[0] == total


def test_the_autoscalers_bounds_restart_no_pod() -> None:
    ctl, cluster, _ = controller()
    ctl.apply(sample("minimal"), new=True)
    ctl.apply(sample("minimal", inference__replicas={"min": 1, "max": 9}))
    assert cluster.sent[-1] == ["ConfigMap/churn-config", "HorizontalPodAutoscaler/churn-inference"]
    ctl.apply(sample("minimal", inference__replicas={"min": 1, "max": 9}, drift__window=300))
    sent = cluster.sent[-1]
    assert "Deployment/churn-drift" in sent and "Deployment/churn-trainer" in sent


def test_the_rollout_policy_restarts_no_pod_but_the_sticky_key_does() -> None:
    """The operator runs the rollout: its strategy, stages and analysis reach no part
    (a canary's steps changed mid-rollout roll nothing), but inference routes by the
    sticky key."""
    ctl, cluster, _ = controller()
    ctl.apply(sample("minimal"), new=True)
    policy = {"strategy": "canary", "canary": {"steps": [10, 100], "stepSeconds": 30}}
    ctl.apply(sample("minimal", rollout=policy))
    assert cluster.sent[-1] == ["ConfigMap/churn-config"]
    ctl.apply(sample("minimal", rollout={**policy, "stickyKey": "user"}))
    assert "Deployment/churn-inference" in cluster.sent[-1]


def test_a_release_that_adds_a_defaulted_field_restarts_no_pod() -> None:
    """The pods' config hash leaves defaults out: a spec field that a new release adds
    with a default (the parts fill the same one in) changes no pod template."""
    model = sample("minimal")
    settings = OperatorSettings.model_construct()
    before = config_hash(BuildContext(model, settings))

    training = type(model.spec.training)

    class LaterTraining(training):  # type: ignore[misc, valid-type]
        added_in_a_later_release: int = 7

    later = model.model_copy(
        update={
            "spec": model.spec.model_copy(
                update={"training": LaterTraining(**model.spec.training.model_dump())}
            )
        }
    )
    assert later.spec.training.added_in_a_later_release == 7  # type: ignore[attr-defined]
    assert config_hash(BuildContext(later, settings)) == before
    changed = sample("minimal", training__batchSize=model.spec.training.batch_size * 2)
    assert config_hash(BuildContext(changed, settings)) != before
