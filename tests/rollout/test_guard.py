"""The guard after a promotion: the previous champion in shadow, a rollback when live
labels show the new champion worse, and no action on too little evidence."""

from __future__ import annotations

import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.rollout import SetAlias, SetRouting
from driftline.rollout.guard import GuardEvidence
from driftline.rollout.policy import GuardPolicy
from tests.rollout.builders import World, evidence, policy, served


def promoted(**guard: object) -> World:
    """Version 2 promoted over version 1 by the shadow strategy, under a guard."""
    limits: dict[str, object] = {"window_seconds": 600.0, "min_labeled": 50, **guard}
    world = World(policy=policy(strategy="shadow", guard=GuardPolicy(**limits)))  # type: ignore[arg-type]
    world.tick()
    world.propose("2")
    world.add(evidence(30))
    world.tick(1)
    assert world.state.stage == "promoted" and world.state.stable == "2"
    return world


def seen(
    champion: float, previous: float, n: int = 100, baseline: float | None = None
) -> GuardEvidence:
    return GuardEvidence(
        champion=served(n, champion),
        previous=served(n, previous),
        baseline=served(n, baseline) if baseline is not None else None,
    )


def test_a_promotion_keeps_the_previous_champion_in_shadow_for_the_window() -> None:
    world = promoted()
    assert world.routing == SetRouting(stable="2", candidate="1", mode="shadow")
    assert world.state.guard is not None and world.state.guard.previous == "1"
    world.tick(60, guard=seen(0.9, 0.9))
    assert world.state.stage == "promoted" and "guard of version 2 (pass)" in world.state.reason
    world.tick(600, guard=seen(0.9, 0.9))
    assert world.state.guard is None and world.state.reason.endswith(
        "guard window ended, version kept"
    )
    assert world.routing == SetRouting(stable="2")


def test_a_new_champion_worse_than_the_previous_one_is_rolled_back() -> None:
    world = promoted(max_drop_vs_previous=0.02)
    decision = world.tick(30, guard=seen(0.80, 0.90))
    assert world.state.stage == "aborted" and world.state.stable == "1"
    assert world.state.guard is None
    assert SetAlias(alias=ALIAS_CHAMPION, version="1") in decision.actions
    assert world.aliases[ALIAS_CHAMPION] == "1" and world.routing == SetRouting(stable="1")
    reason = world.events[-1].event.reason
    assert reason.startswith("guard failed: accuracy 0.8000 vs previous 0.9000")
    assert reason.endswith("version 2 rolled back to 1")
    assert world.events[-1].event.previous_stage == "promoted"
    # Rolled back for good: the candidate alias coming back to it starts nothing.
    world.propose("2")
    assert world.state.stage == "aborted"


@pytest.mark.parametrize(
    ("champion_n", "previous_n"),
    [(49, 500), (500, 49), (0, 0)],
    ids=["champion", "previous", "none"],
)
def test_too_few_labels_is_never_a_rollback(champion_n: int, previous_n: int) -> None:
    world = promoted()
    ev = GuardEvidence(champion=served(champion_n, 0.1), previous=served(previous_n, 0.99))
    world.tick(30, guard=ev)
    assert world.state.stage == "promoted" and "(inconclusive)" in world.state.reason
    assert world.aliases[ALIAS_CHAMPION] == "2"


def test_a_failing_metrics_source_is_no_action() -> None:
    world = promoted()
    world.tick(30, metrics_error="redis: down")
    assert world.state.stage == "promoted" and "no action" in world.state.reason


def test_within_the_limit_is_kept() -> None:
    world = promoted(max_drop_vs_previous=0.05)
    world.tick(30, guard=seen(0.86, 0.90))
    assert world.state.stage == "promoted"


def test_the_baseline_is_judged_when_a_limit_is_set() -> None:
    world = promoted(max_drop_vs_previous=0.5, max_drop_vs_baseline=0.02)
    world.tick(30, guard=seen(0.80, 0.80, baseline=0.90))
    assert world.state.stage == "aborted"
    assert "accuracy 0.8000 vs baseline 0.9000" in world.state.reason
    ignored = promoted(max_drop_vs_previous=0.5)
    ignored.tick(30, guard=seen(0.80, 0.80, baseline=0.90))
    assert ignored.state.stage == "promoted"


def test_regression_compares_relative_mae() -> None:
    world = promoted(max_drop_vs_previous=0.1)
    world.policy = policy(strategy="shadow", task="regression", guard=world.policy.guard)
    world.tick(30, guard=seen(0.7, 0.8))  # mae 0.3 vs 0.2: 50 % worse
    assert world.state.stage == "aborted" and "mae 0.3000 vs previous 0.2000" in world.state.reason


def test_a_newer_candidate_waits_for_the_window() -> None:
    world = promoted()
    world.propose("3")
    world.tick(30, guard=seen(0.9, 0.9))
    assert world.state.stage == "promoted" and world.state.candidate is None
    world.tick(600, guard=seen(0.9, 0.9))
    world.tick(1)
    state = world.state
    assert state.stage == "shadow" and state.candidate == "3"
    assert world.state.stable == "2"


def test_a_champion_moved_by_hand_ends_the_window() -> None:
    world = promoted()
    world.aliases[ALIAS_CHAMPION] = "1"
    world.tick(1, guard=seen(0.5, 0.9))
    assert world.state.guard is None and world.state.stable == "1"
    assert world.state.stage == "promoted"


def test_without_a_guard_a_promotion_serves_the_new_version_alone() -> None:
    world = World(policy=policy(strategy="shadow"))
    world.tick()
    world.propose("2")
    world.add(evidence(30))
    world.tick(1)
    assert world.state.guard is None and world.routing == SetRouting(stable="2")
