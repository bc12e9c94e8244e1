"""The guard after a promotion against real Redis, MLflow and Kafka: a new champion
worse than the previous one on live labels is rolled back; too few labels never is."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from driftline.api import DynamicModel
from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.local.servers.kafka import KafkaBroker
from driftline.rollout import RolloutState
from driftline.rollout.driver import RolloutDriver
from driftline.rollout.metrics import GUARD_ROLLBACKS_TOTAL
from tests.integration.rollout.support import ModelFactory, Traffic, aliases, control_events
from tests.integration.rollout.test_driver import driver_for, routing, run_until

pytestmark = pytest.mark.integration


def promoted(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any, **guard: Any
) -> tuple[DynamicModel, RolloutDriver, Traffic]:
    """Version 2 promoted over version 1 by a shadow, with `rollout.guard` set."""
    model = rollout_model(strategy="shadow", guard={"minLabeled": 40, **guard})
    traffic = Traffic(redis_client, model)
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")

    def feed(state: RolloutState) -> None:
        if state.active:
            traffic.stage(state.stage, "1", "2")

    run_until(driver, lambda s: s.stage == "promoted", feed)
    return model, driver, traffic


def test_a_worse_new_champion_is_rolled_back_to_the_previous_one(
    rollout_model: ModelFactory,
    registry: Any,
    redis_client: Any,
    producer: Any,
    kafka: KafkaBroker,
) -> None:
    model, driver, traffic = promoted(
        rollout_model, registry, redis_client, producer, windowSeconds=60, maxDropVsPrevious=0.05
    )
    table = routing(redis_client, model)
    assert (table.stable, table.candidate, table.mode) == ("2", "1", "shadow")
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "2"}
    before = REGISTRY.get_sample_value(GUARD_ROLLBACKS_TOTAL, {"model": driver.label}) or 0.0

    def feed(state: RolloutState) -> None:
        # What the joiner counts: the champion as served, the previous one in shadow.
        traffic.labeled("2", "stable", 10, 0.7)
        traffic.labeled("1", "shadow", 10, 0.9)

    state = run_until(driver, lambda s: s.stage != "promoted", feed)
    assert state.stage == "aborted" and state.stable == "1", state.reason
    assert state.reason.startswith("guard failed: accuracy 0.7000 vs previous 0.9000")
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "1"}
    table = routing(redis_client, model)
    assert (table.stable, table.candidate, table.mode) == ("1", None, "stable")
    after = REGISTRY.get_sample_value(GUARD_ROLLBACKS_TOTAL, {"model": driver.label})
    assert after == before + 1
    events = control_events(kafka, model.topics.control, expected=4)
    assert (events[-1].previous_stage, events[-1].stage) == ("promoted", "aborted")
    assert events[-1].reason == state.reason


def test_too_few_labels_keep_the_new_champion_until_the_window_ends(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model, driver, traffic = promoted(
        rollout_model, registry, redis_client, producer, windowSeconds=3, maxDropVsPrevious=0.05
    )
    assert driver.state is not None
    until = driver.state.guard.until if driver.state.guard else 0.0
    traffic.labeled("2", "stable", 39, 0.1)  # far worse, but one label short
    traffic.labeled("1", "shadow", 39, 0.9)
    state = run_until(driver, lambda s: s.guard is None, timeout=15)
    assert time.time() >= until
    assert state.stage == "promoted" and state.stable == "2"
    assert state.reason.endswith("guard window ended, version kept")
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "2"}
    table = routing(redis_client, model)
    assert (table.stable, table.candidate, table.mode) == ("2", None, "stable")
