"""The analysis verdicts, the evidence arithmetic, the policy, and the saved state."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from driftline.api import load_dynamic_model
from driftline.api.status import RolloutStatus
from driftline.rollout import (
    Evidence,
    Policy,
    RolloutState,
    SetRouting,
    VersionCounters,
    analyze,
    routing_for,
    status_of,
)
from driftline.rollout.rollout_state import decode_state, encode_state
from driftline.rollout.store import Record
from tests.conftest import SAMPLES
from tests.rollout.builders import World, evidence, latency, policy


def verdict(window: Evidence, stage: str = "canary", reference: float | None = None) -> str:
    return analyze(window, policy(), stage=stage, weight=50, reference=reference, at=0).verdict


@pytest.mark.parametrize(
    ("window", "stage", "expected"),
    [
        (evidence(20), "canary", "pass"),
        (evidence(19, accuracy=1.0), "canary", "inconclusive"),
        (evidence(20, accuracy=0.88), "canary", "pass"),  # drop 0.02 == limit
        (evidence(20, accuracy=0.85), "canary", "fail"),
        (evidence(20, accuracy=0.85, stable_labeled=5), "canary", "inconclusive"),
        (evidence(20, agreement=0.85), "canary", "pass"),  # agreement is a shadow check
        (evidence(20, agreement=0.85), "shadow", "fail"),
        (evidence(20, errors=1), "canary", "pass"),
        (evidence(20, errors=2), "canary", "fail"),
        (evidence(20, ms=75), "canary", "fail"),
        (evidence(5, accuracy=0.0, errors=5), "canary", "inconclusive"),  # too few to judge
    ],
)
def test_verdicts(window: Evidence, stage: str, expected: str) -> None:
    assert verdict(window, stage) == expected


def test_a_failure_outranks_missing_evidence() -> None:
    window = Evidence(
        candidate=VersionCounters(labeled=3, correct=3, requests=30, errors=10, latency=latency(30))
    )
    result = analyze(window, policy(), stage="canary", weight=5, reference=None, at=0)
    assert result.verdict == "fail" and result.reason.startswith("error rate 0.3333")


def test_the_reference_stands_in_only_for_a_stable_without_samples() -> None:
    weak_stable = evidence(20, accuracy=0.9, stable_accuracy=0.5, stable_labeled=0)
    assert verdict(weak_stable, reference=0.95) == "fail"
    assert verdict(weak_stable, reference=0.9) == "pass"
    measured = evidence(20, accuracy=0.9, stable_accuracy=0.9)
    assert verdict(measured, reference=0.99) == "pass"


def test_missing_latency_histogram_is_inconclusive() -> None:
    window = Evidence(
        candidate=VersionCounters(labeled=20, correct=18, requests=20),
        stable=VersionCounters(labeled=20, correct=18),
    )
    result = analyze(window, policy(), stage="canary", weight=5, reference=None, at=0)
    assert result.verdict == "inconclusive" and result.reason == "no latency recorded"


def test_evidence_difference_is_clamped_at_zero() -> None:
    later, earlier = evidence(10), evidence(30)
    window = later.minus(earlier)
    assert window.candidate.labeled == 0 and window.compared == 0
    assert all(n == 0 for n in window.candidate.latency)
    assert evidence(30).minus(evidence(10)).candidate.labeled == 20


def test_policy_from_the_demo_model() -> None:
    model = load_dynamic_model(SAMPLES / "sea-demo.yaml")
    p = Policy.from_model(model)
    assert p.model == "sea" and p.strategy == "shadow-then-canary"
    assert p.steps == (20, 50, 100) and p.step_seconds == 10
    assert (p.min_labeled, p.max_quality_drop, p.max_inconclusive_seconds) == (150, 0.02, 120)
    assert (p.shadow_min_samples, p.max_disagreement) == (300, 0.5)
    assert not p.rollback_on_drift and p.min_requests == 100


def test_policy_refuses_steps_that_do_not_end_at_100() -> None:
    with pytest.raises(ValueError, match="must end at 100"):
        Policy(model="m", steps=(5, 50))


def test_routing_at_rest_names_no_candidate() -> None:
    for stage in ("idle", "promoted", "aborted"):
        state = RolloutState(stage=stage, stable="1", candidate="2", baseline="0", weight=30)  # type: ignore[arg-type]
        assert routing_for(state) == SetRouting(stable="1", baseline="0")


def test_state_round_trips_through_json_and_maps_onto_the_status() -> None:
    world = World(policy=policy(strategy="canary"))
    world.tick()
    world.propose("2")
    world.add(evidence(30))
    world.tick(1)
    state = world.state
    assert decode_state(encode_state(state)) == state
    record = Record(state=state, pending=world.decisions[1].actions, revision=4)
    assert msgspec.json.decode(msgspec.json.encode(record), type=Record) == record

    status = status_of(state)
    assert isinstance(status, RolloutStatus)
    assert (status.stage, status.weight, status.step) == ("canary", 50, 0)
    assert status.since == datetime.fromtimestamp(state.since, UTC)
    assert status.last_analysis is not None and status.last_analysis["verdict"] == "pass"
    dumped = status.model_dump(by_alias=True, mode="json")
    assert dumped["lastAnalysis"]["checks"][0]["name"] == "labeled"
    assert status_of(RolloutState()).since is None
