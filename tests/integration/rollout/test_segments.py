"""The worst-segment gate against real Redis, MLflow and Kafka: the driver reads the
joiner's per-segment counters and keeps a candidate that loses one segment out."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.api import DynamicModel
from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.rollout import RolloutState
from driftline.rollout.driver import RolloutDriver
from tests.integration.rollout.support import ModelFactory, Traffic, aliases, control_events
from tests.integration.rollout.test_driver import driver_for, run_until

pytestmark = pytest.mark.integration

ANALYSIS = {
    "minLabeled": 20,
    "maxAccuracyDrop": 0.05,
    "maxP99Ms": 50,
    "maxErrorRate": 0.05,
    "maxInconclusiveSeconds": 30,
    "maxSegmentDrop": 0.05,
    "minSegmentLabeled": 20,
}
SEGMENTS = {"segments": [{"name": "x1", "bins": [0.5]}]}


def rollout(
    model: DynamicModel, redis_client: Any, producer: Any, registry: Any, low_accuracy: float
) -> tuple[RolloutDriver, RolloutState]:
    """Canary of version 2, better overall (0.95 vs 0.9) and on x1 >= 0.5 (1.0 vs 0.9);
    on x1 < 0.5 it reaches `low_accuracy` against the stable's 0.9."""
    traffic = Traffic(redis_client, model)
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")

    def feed(state: RolloutState) -> None:
        if not state.active:
            return
        variant = "shadow" if state.stage == "shadow" else "candidate"
        traffic.stage(state.stage, "1", "2", n=50, accuracy=0.95)
        for version, var, low, high in (
            ("1", "stable", 0.9, 0.9),
            ("2", variant, low_accuracy, 1.0),
        ):
            traffic.segment(version, var, "x1", "<0.5", 25, low)
            traffic.segment(version, var, "x1", ">=0.5", 25, high)

    state = run_until(driver, lambda s: s.stage in ("promoted", "aborted"), feed)
    return driver, state


def test_better_overall_but_worse_on_one_segment_is_not_promoted(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any, kafka: Any
) -> None:
    model = rollout_model(strategy="canary", analysis=ANALYSIS, monitoring=SEGMENTS)
    _, state = rollout(model, redis_client, producer, registry, low_accuracy=0.72)
    assert state.stage == "aborted", state.reason
    assert "worst segment x1=<0.5" in state.reason
    assert state.last_analysis is not None and state.last_analysis.worst_segment == "x1=<0.5"
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "1"}
    events = control_events(kafka, model.topics.control, 2)
    assert any(e.stage == "aborted" and "x1=<0.5" in e.reason for e in events)


def test_a_candidate_fine_on_every_segment_is_promoted(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model = rollout_model(strategy="canary", analysis=ANALYSIS, monitoring=SEGMENTS)
    _, state = rollout(model, redis_client, producer, registry, low_accuracy=0.88)
    assert state.stage == "promoted", state.reason
    assert aliases(registry, model.name)[ALIAS_CHAMPION] == "2"
