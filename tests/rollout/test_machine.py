"""Each transition of the rollout state machine, one table row or test at a time."""

from __future__ import annotations

import msgspec
import pytest

from driftline.api.artifacts import ALIAS_BASELINE, ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.rollout import (
    Command,
    DeleteAlias,
    DriftSignal,
    EmitEvent,
    RolloutState,
    SetAlias,
    SetRouting,
    routing_for,
)
from driftline.rollout.rollout_state import HISTORY_LIMIT
from tests.rollout.builders import World, evidence, policy

replace = msgspec.structs.replace


def started(strategy: str = "shadow-then-canary", **overrides: object) -> World:
    world = World(policy=policy(strategy=strategy, **overrides))
    world.tick()  # adopts the champion
    world.propose("2")
    return world


def through_shadow(world: World) -> None:
    world.add(evidence(30))
    world.tick(1)
    assert world.state.stage == "canary"


# --- at rest ----------------------------------------------------------------------------


def test_idle_adopts_the_champion_and_routes_to_it() -> None:
    world = World()
    decision = world.tick()
    assert world.state.stage == "idle" and world.state.stable == "1"
    assert world.routing == SetRouting(stable="1")
    assert [t.reason for t in decision.transitions] == ["the champion alias names version 1"]


def test_no_champion_means_no_routing_and_a_waiting_candidate() -> None:
    world = World(aliases={ALIAS_CANDIDATE: "2"})
    decision = world.tick()
    assert world.state.stage == "idle" and world.routing is None and not decision.actions
    assert "waits for a stable version" in world.state.reason


@pytest.mark.parametrize(
    ("strategy", "stage", "mode", "weight"),
    [
        ("shadow-then-canary", "shadow", "shadow", 0),
        ("shadow", "shadow", "shadow", 0),
        ("manual", "shadow", "shadow", 0),
        ("canary", "canary", "canary", 50),
    ],
)
def test_a_candidate_starts_the_strategys_first_stage(
    strategy: str, stage: str, mode: str, weight: int
) -> None:
    world = started(strategy)
    assert world.state.stage == stage and world.state.candidate == "2"
    assert world.routing == SetRouting(stable="1", candidate="2", mode=mode, weight=weight)  # type: ignore[arg-type]
    assert world.events[-1].event.stage == stage
    assert world.events[-1].event.reason.startswith("candidate alias names version 2")


def test_a_candidate_waits_while_the_metrics_source_fails() -> None:
    world = World(aliases={ALIAS_CHAMPION: "1", ALIAS_CANDIDATE: "2"})
    world.tick(metrics_error="redis: connection refused")
    assert world.state.stage == "idle" and "metrics source failed" in world.state.reason
    world.tick(1)
    assert world.state.stage == "shadow"


def test_an_unreadable_registry_changes_nothing_at_rest() -> None:
    world = World(aliases={ALIAS_CHAMPION: "1", ALIAS_CANDIDATE: "2"})
    decision = world.tick(registry_down=True)
    assert decision.state == RolloutState() and not decision.actions


def test_the_baseline_alias_joins_the_routing_table_without_a_transition() -> None:
    world = World()
    world.tick()
    world.aliases[ALIAS_BASELINE] = "0"
    decision = world.tick(1)
    assert world.routing == SetRouting(stable="1", baseline="0")
    assert not decision.transitions


# --- shadow -----------------------------------------------------------------------------


def test_shadow_is_inconclusive_below_min_labeled_even_when_perfect() -> None:
    world = started()
    world.add(evidence(19, accuracy=1.0, stable_accuracy=0.5))
    world.tick(1)
    assert world.state.stage == "shadow"
    assert world.state.last_analysis is not None
    assert world.state.last_analysis.verdict == "inconclusive"
    assert "19 of 20 labeled" in world.state.reason


def test_shadow_that_passes_moves_to_the_first_canary_step() -> None:
    world = started()
    world.add(evidence(30))
    decision = world.tick(1)
    assert world.state.stage == "canary" and world.state.weight == 50 and world.state.step == 0
    assert world.routing == SetRouting(stable="1", candidate="2", mode="canary", weight=50)
    assert world.state.step_base == world.counters  # the step judges only what comes next
    assert decision.transitions[0].reason.startswith("shadow passed: accuracy 0.9000")


def test_shadow_strategy_promotes_after_shadow() -> None:
    world = started("shadow")
    world.add(evidence(30))
    decision = world.tick(1)
    assert world.state.stage == "promoted" and world.state.stable == "2"
    assert world.aliases == {ALIAS_CHAMPION: "2"}
    assert world.routing == SetRouting(stable="2")
    assert SetAlias(alias=ALIAS_CHAMPION, version="2") in decision.actions
    assert DeleteAlias(alias=ALIAS_CANDIDATE, version="2") in decision.actions


def test_shadow_disagreement_aborts() -> None:
    world = started()
    world.add(evidence(30, agreement=0.5))
    world.tick(1)
    assert world.state.stage == "aborted"
    assert "disagreement 0.5000" in world.state.reason


# --- canary -----------------------------------------------------------------------------


def test_a_canary_step_is_held_for_step_seconds() -> None:
    world = started()
    through_shadow(world)
    world.add(evidence(30))
    world.tick(5)
    assert world.state.weight == 50 and "holding" in world.state.reason
    world.tick(5)
    assert world.state.weight == 100 and world.state.step == 1


def test_evidence_of_an_earlier_step_does_not_count_again() -> None:
    world = started()
    world.add(evidence(100))  # plenty, all during shadow
    world.tick(1)
    world.tick(10)
    assert world.state.stage == "canary" and world.state.step == 0
    assert "0 of 20 labeled" in world.state.reason


def test_the_last_step_promotes_and_moves_the_aliases() -> None:
    world = started()
    through_shadow(world)
    for _ in range(2):
        world.add(evidence(30))
        world.tick(10)
    assert world.state.stage == "promoted" and world.state.stable == "2"
    assert world.state.candidate is None and world.state.weight == 0
    assert world.aliases == {ALIAS_CHAMPION: "2"}
    assert world.routing == SetRouting(stable="2")
    assert world.events[-1].event.reason.endswith("version 2 promoted")
    assert "2" in world.state.decided


def test_the_100_percent_step_compares_with_the_stable_quality_of_the_step_before() -> None:
    world = started("canary")
    world.add(evidence(30, accuracy=0.9, stable_accuracy=0.9))
    world.tick(10)
    assert world.state.weight == 100 and world.state.stable_quality == pytest.approx(0.9)
    world.add(evidence(30, accuracy=0.8, stable_labeled=0))  # stable serves nothing now
    world.tick(10)
    assert world.state.stage == "aborted"
    assert "accuracy 0.8000 vs stable 0.9000" in world.state.reason


def test_without_any_stable_measurement_the_quality_is_inconclusive() -> None:
    world = started("canary", steps=(100,))
    world.add(evidence(30, stable_labeled=0))
    world.tick(10)
    assert world.state.stage == "canary"
    assert "no stable accuracy to compare with" in world.state.reason


@pytest.mark.parametrize(
    ("more", "expected"),
    [
        (evidence(30, accuracy=0.8), "accuracy 0.8000 vs stable 0.9000"),
        (evidence(30, errors=6), "error rate 0.2000"),
        (evidence(30, ms=120), "p99 <= 150 ms"),
    ],
    ids=["accuracy", "error-rate", "p99"],
)
def test_a_failing_check_aborts_at_once_even_within_the_hold(more: object, expected: str) -> None:
    world = started()
    through_shadow(world)
    world.add(more)  # type: ignore[arg-type]
    decision = world.tick(1)
    assert world.state.stage == "aborted", world.state.reason
    assert expected in world.state.reason
    assert world.routing == SetRouting(stable="1")
    assert world.aliases == {ALIAS_CHAMPION: "1"}
    assert SetAlias(alias=ALIAS_CHAMPION, version="1") in decision.actions
    assert DeleteAlias(alias=ALIAS_CANDIDATE, version="2") in decision.actions
    assert isinstance(decision.actions[0], SetRouting)  # traffic leaves the candidate first


def test_regression_compares_mean_absolute_error() -> None:
    world = started("canary", task="regression", max_quality_drop=0.1)
    world.add(evidence(30, accuracy=0.9, stable_accuracy=0.9))  # mae 0.1 vs 0.1
    world.tick(10)
    assert world.state.weight == 100
    world.add(evidence(30, accuracy=0.8, stable_accuracy=0.9))  # mae 0.2 vs 0.1
    world.tick(1)
    assert world.state.stage == "aborted" and "mae 0.2 vs stable 0.1" in world.state.reason


# --- inconclusive, failures, drift ------------------------------------------------------


def test_inconclusive_past_the_budget_aborts() -> None:
    world = started()
    through_shadow(world)
    world.add(evidence(5))
    world.tick(10 + 60)  # due at 10 s, waited exactly the budget
    assert world.state.stage == "canary" and "inconclusive" in world.state.reason
    world.tick(1)
    assert world.state.stage == "aborted"
    assert "inconclusive for 61s (limit 60s)" in world.state.reason


def test_counts_going_down_abort_as_a_failed_source() -> None:
    world = started()
    world.add(evidence(100))
    world.tick(1)
    world.counters = evidence(50)  # Redis lost buckets: cumulative went down
    world.tick(10)
    assert world.state.stage == "aborted"
    assert world.state.reason.startswith("metrics source lost counts")


@pytest.mark.parametrize("stage", ["shadow", "canary"])
def test_a_failing_metrics_source_aborts(stage: str) -> None:
    world = started()
    if stage == "canary":
        through_shadow(world)
    world.tick(1, metrics_error="redis: connection refused")
    assert world.state.stage == "aborted"
    assert world.state.reason.startswith("metrics source failed: redis: connection refused")
    assert world.routing == SetRouting(stable="1")


def drift(at: float) -> DriftSignal:
    return DriftSignal(event_id="d1", detected_at=at, kind="concept", model_version="1")


@pytest.mark.parametrize(
    ("on_drift_rollback", "in_canary", "detected_offset", "aborts"),
    [
        (True, True, 0.5, True),
        (True, True, -100, False),  # detected before the canary began
        (True, False, 0.5, False),  # shadow serves nobody: nothing to roll back
        (False, True, 0.5, False),  # onDrift without rollback
    ],
)
def test_drift_during_a_canary_aborts_only_with_rollback(
    on_drift_rollback: bool, in_canary: bool, detected_offset: float, aborts: bool
) -> None:
    world = started(rollback_on_drift=on_drift_rollback)
    if in_canary:
        through_shadow(world)
    world.tick(1, drift=drift(world.state.since + detected_offset))
    assert (world.state.stage == "aborted") is aborts
    if aborts:
        assert "concept drift detected on version 1 during the canary" in world.state.reason


def test_registry_unreadable_during_a_rollout_changes_nothing() -> None:
    world = started()
    world.add(evidence(30))
    world.tick(1, registry_down=True)
    assert world.state.stage == "canary"


# --- candidates come and go -------------------------------------------------------------


def test_a_newer_candidate_waits_for_the_shadow_to_be_judged() -> None:
    world = started()
    world.add(evidence(10))
    world.tick(1)
    decision = world.propose("3")
    assert not decision.transitions
    assert world.state.stage == "shadow" and world.state.candidate == "2"
    assert world.state.reason.endswith("version 3 waits for this rollout to end")
    assert world.routing == SetRouting(stable="1", candidate="2", mode="shadow")
    world.add(evidence(20))  # the shadow's evidence is in: it passes on its own
    world.tick(1)
    assert world.state.stage == "canary" and world.state.candidate == "2"
    assert "3" not in world.state.decided and world.aliases[ALIAS_CANDIDATE] == "3"


def test_the_newest_waiting_candidate_is_tested_after_a_failed_shadow() -> None:
    world = started()
    world.propose("3")
    world.propose("4")  # the trainer kept learning: 4 replaces 3 as the next to test
    world.add(evidence(30, accuracy=0.5))
    world.tick(1)
    assert world.state.stage == "aborted" and world.state.decided[-1] == "2"
    assert world.aliases[ALIAS_CANDIDATE] == "4"  # the abort removes only its own alias
    world.tick(1)
    assert world.state.stage == "shadow" and world.state.candidate == "4"
    assert world.state.reason.startswith("candidate alias names version 4")


def test_a_shadow_inconclusive_with_its_evidence_in_is_superseded() -> None:
    world = started()
    full = evidence(30)
    # No latency recorded for the candidate: more samples cannot conclude its shadow.
    world.add(replace(full, candidate=replace(full.candidate, latency=())))
    world.tick(1)
    assert world.state.stage == "shadow" and "no latency recorded" in world.state.reason
    decision = world.propose("3")
    assert [(t.from_stage, t.to_stage, t.candidate) for t in decision.transitions] == [
        ("shadow", "aborted", "2"),
        ("aborted", "shadow", "3"),
    ]
    assert decision.transitions[0].reason.startswith("superseded by version 3")
    assert "no latency recorded" in decision.transitions[0].reason
    assert world.state.stage == "shadow" and world.state.candidate == "3"
    assert world.state.started_at == world.now and world.state.step_base.candidate.labeled == 0
    assert world.routing == SetRouting(stable="1", candidate="3", mode="shadow")
    assert not [a for a in decision.actions if isinstance(a, SetAlias | DeleteAlias)]
    assert "2" in world.state.decided


def test_a_shadow_short_of_its_evidence_is_never_superseded() -> None:
    world = started()
    world.add(evidence(19))
    for version in range(3, 10):
        world.propose(str(version))
        world.tick(1)
        assert world.state.stage == "shadow" and world.state.candidate == "2"


def test_a_newer_candidate_waits_for_a_canary_to_finish() -> None:
    world = started()
    through_shadow(world)
    world.propose("3")
    assert world.state.candidate == "2" and world.state.weight == 50
    assert world.state.reason.endswith("version 3 waits for this rollout to end")
    for _ in range(2):
        world.add(evidence(30))
        world.tick(10)
    assert world.state.stage == "promoted" and world.state.stable == "2"
    assert world.aliases == {ALIAS_CHAMPION: "2", ALIAS_CANDIDATE: "3"}  # 3 kept its alias
    world.tick(1)
    assert world.state.stage == "shadow" and world.state.candidate == "3"
    assert world.routing == SetRouting(stable="2", candidate="3", mode="shadow")


def test_removing_the_candidate_alias_aborts() -> None:
    world = started()
    del world.aliases[ALIAS_CANDIDATE]
    world.tick(1)
    assert world.state.stage == "aborted" and "candidate alias was removed" in world.state.reason


def test_a_decided_version_is_never_rolled_out_again() -> None:
    world = started()
    world.tick(1, command=Command(action="abort"))
    assert world.state.stage == "aborted" and ALIAS_CANDIDATE not in world.aliases
    world.propose("2")
    assert world.state.stage == "aborted"
    world.propose("3")
    assert world.state.stage == "shadow"
    world.propose("2")  # pointing back at a decided version changes nothing
    assert world.state.stage == "shadow" and world.state.candidate == "3"


def test_after_a_promotion_the_next_candidate_starts_a_new_rollout() -> None:
    world = started("shadow")
    world.add(evidence(30))
    world.tick(1)
    world.propose("3")
    assert world.state.stage == "shadow" and world.state.stable == "2"
    assert world.routing == SetRouting(stable="2", candidate="3", mode="shadow")


# --- manual -----------------------------------------------------------------------------


def test_manual_waits_for_approval_of_each_stage() -> None:
    world = started("manual")
    world.add(evidence(30))
    world.tick(1)
    assert world.state.stage == "shadow" and "waiting for approval" in world.state.reason
    world.tick(1, command=Command(action="approve", version="9"))  # another candidate's
    assert world.state.stage == "shadow"
    world.tick(1, command=Command(action="approve", version="2"))
    assert world.state.stage == "canary" and not world.state.approved
    world.add(evidence(30))
    world.tick(10)
    assert world.state.weight == 50 and "waiting for approval" in world.state.reason


def test_manual_approval_never_overrides_missing_evidence() -> None:
    world = started("manual")
    world.tick(1, command=Command(action="approve"))
    assert world.state.stage == "shadow" and world.state.approved
    assert "inconclusive" in world.state.reason
    world.add(evidence(30))
    world.tick(1)  # the early approval counts once the evidence passes
    assert world.state.stage == "canary"


def test_an_abort_command_aborts_with_its_reason() -> None:
    world = started("canary")
    world.tick(1, command=Command(action="abort", version="2", reason="looks off"))
    assert world.state.stage == "aborted"
    assert world.state.reason == "abort requested: looks off; version 2 rolled back"


# --- records ----------------------------------------------------------------------------


def test_every_transition_is_recorded_with_its_reason_and_event() -> None:
    world = started()
    through_shadow(world)
    world.add(evidence(5, accuracy=0.0))
    world.add(evidence(30, accuracy=0.5))
    world.tick(1)
    history = world.state.history
    assert [(t.from_stage, t.to_stage) for t in history] == [
        ("idle", "idle"),
        ("idle", "shadow"),
        ("shadow", "canary"),
        ("canary", "aborted"),
    ]
    assert all(t.reason for t in history)
    assert [e.event.reason for e in world.events] == [t.reason for t in history]
    assert all(isinstance(e, EmitEvent) and e.event.model == "m" for e in world.events)


def test_history_is_bounded() -> None:
    world = World(policy=policy(strategy="shadow"))
    world.tick()
    for version in range(2, 2 + HISTORY_LIMIT):
        world.propose(str(version))
        world.add(evidence(30))
        world.tick(1)  # each shadow passes: promoted
    assert len(world.state.history) == HISTORY_LIMIT


def test_routing_always_matches_the_state() -> None:
    world = started()
    through_shadow(world)
    for decision in world.decisions:
        routes = [a for a in decision.actions if isinstance(a, SetRouting)]
        assert len(routes) <= 1
        if routes:
            assert routes[0] == routing_for(decision.state)
