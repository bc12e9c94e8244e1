"""`rollout.analysis.estimate`: accuracy estimated from confidence as early evidence.

While the candidate has too few labels, a fresh estimate that trails the stable
version's by more than `maxDrop` aborts; any other estimate holds, and none ever lets
a stage pass.
"""

from __future__ import annotations

import pytest

from driftline.api import DynamicModel, load_dynamic_model
from driftline.common.redis_state import AccuracyEstimate
from driftline.rollout import Policy
from driftline.rollout.analysis import analyze
from tests.conftest import SAMPLES
from tests.rollout.builders import World, evidence, policy

GATE = {"estimate_max_drop": 0.05, "estimate_min_predictions": 100}


def started(strategy: str = "shadow-then-canary", **overrides: object) -> World:
    world = World(policy=policy(strategy=strategy, **{**GATE, **overrides}))
    world.tick()  # adopts the champion
    world.propose("2")
    return world


def estimates(
    candidate: float, stable: float = 0.9, *, rows: int = 500, at: float = 1000.0
) -> dict[str, AccuracyEstimate]:
    return {
        "2": AccuracyEstimate(accuracy=candidate, rows=rows, at=at),
        "1": AccuracyEstimate(accuracy=stable, rows=rows, at=at),
    }


@pytest.mark.parametrize("strategy", ["shadow-then-canary", "canary"])
def test_a_bad_estimate_aborts_before_labels(strategy: str) -> None:
    world = started(strategy)
    world.add(evidence(5))  # 5 of 20 labeled: the labeled checks wait
    world.tick(1, estimates=estimates(0.80))
    assert world.state.stage == "aborted"
    reason = world.state.history[-1].reason
    assert "estimated accuracy 0.8000 vs stable 0.9000 before labels" in reason
    assert world.aliases.get("champion") == "1" and "candidate" not in world.aliases


def test_a_bad_estimate_aborts_a_canary_step_within_its_hold() -> None:
    world = started()
    world.add(evidence(30))
    world.tick(1)
    assert world.state.stage == "canary"
    world.tick(1, estimates=estimates(0.70))  # the step's own labels: none yet
    assert world.state.stage == "aborted"
    assert "canary 50% failed: estimated accuracy" in world.state.history[-1].reason


def test_an_estimate_within_the_limit_holds_and_never_passes() -> None:
    world = started()
    world.add(evidence(5))
    for _ in range(5):
        world.tick(1, estimates=estimates(0.99))  # better than stable, still no pass
    assert world.state.stage == "shadow"
    analysis = world.state.last_analysis
    assert analysis is not None and analysis.verdict == "inconclusive"
    assert {c.name: c.verdict for c in analysis.checks}["estimate"] == "inconclusive"


def test_the_estimate_alone_never_passes_even_past_the_inconclusive_budget() -> None:
    world = started()
    world.add(evidence(5))
    world.tick(1, estimates=estimates(0.95))
    world.tick(61, estimates=estimates(0.95))
    assert world.state.stage == "aborted"  # inconclusive too long, not promoted
    assert "inconclusive for" in world.state.history[-1].reason


def test_no_effect_once_labels_suffice() -> None:
    world = started()
    world.add(evidence(30))  # labeled accuracy equal to the stable's
    world.tick(1, estimates=estimates(0.50))
    assert world.state.stage == "canary"
    analysis = world.state.last_analysis
    assert analysis is not None and "estimate" not in {c.name for c in analysis.checks}


@pytest.mark.parametrize(
    "seen",
    [
        {},  # the drift monitor has published nothing
        estimates(0.50, at=1000.0 - 301),  # stale
        estimates(0.50, rows=99),  # too few predictions
        {"2": AccuracyEstimate(accuracy=0.5, rows=500, at=1000.0)},  # no stable estimate
    ],
    ids=["missing", "stale", "few-predictions", "one-sided"],
)
def test_a_stale_or_missing_estimate_takes_no_action(seen: dict[str, AccuracyEstimate]) -> None:
    world = started()
    world.add(evidence(5))
    world.tick(0, estimates=seen)
    assert world.state.stage == "shadow"
    analysis = world.state.last_analysis
    assert analysis is not None and analysis.verdict == "inconclusive"
    assert "no fresh estimated accuracy" in analysis.reason


def test_off_by_default_and_for_regression() -> None:
    world = World()
    world.tick()
    world.propose("2")
    world.add(evidence(5))
    world.tick(1, estimates=estimates(0.10))
    assert world.state.stage == "shadow"
    regression = policy(task="regression", **GATE)
    assert not regression.gates_estimate
    result = analyze(
        evidence(5),
        regression,
        stage="shadow",
        weight=0,
        reference=None,
        at=1000.0,
        estimates=(AccuracyEstimate(0.1, 500, 1000.0), AccuracyEstimate(0.9, 500, 1000.0)),
    )
    assert result.verdict == "inconclusive"


def test_the_spec_field_reaches_the_policy() -> None:
    demo = load_dynamic_model(SAMPLES / "sea-demo.yaml")
    assert demo.spec.model.task == "classification"
    assert not Policy.from_model(demo).gates_estimate  # unset: off
    raw = demo.model_dump(by_alias=True, exclude_none=True)
    raw["spec"]["rollout"]["analysis"]["estimate"] = {"maxDrop": 0.03, "minPredictions": 50}
    p = Policy.from_model(DynamicModel.model_validate(raw))
    assert (p.estimate_max_drop, p.estimate_min_predictions) == (0.03, 50)
    assert p.estimate_max_age_seconds == 300 and p.gates_estimate
