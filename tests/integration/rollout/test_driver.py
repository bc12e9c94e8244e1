"""The rollout driver against real Redis, MLflow and Kafka: promote, abort, resume."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from driftline.api import DynamicModel
from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.api.events import DriftEvent, encode
from driftline.api.routing import RoutingTable
from driftline.common.redis_state import (
    AccuracyEstimate,
    EstimateStore,
    RoutingStore,
    drift_key,
)
from driftline.local.servers import RedisServer
from driftline.local.servers.kafka import KafkaBroker
from driftline.rollout import Command, RolloutState, read_rollout
from driftline.rollout.driver import RolloutDriver
from driftline.rollout.registry import ModelRegistry
from tests.integration.rollout.support import ModelFactory, Traffic, aliases, control_events

pytestmark = pytest.mark.integration


def driver_for(model: DynamicModel, redis: Any, producer: Any) -> RolloutDriver:
    registry = ModelRegistry(model.spec.model.registry.tracking_uri, model.spec.model.registry.name)
    return RolloutDriver(model, redis, registry, producer)


def routing(redis: Any, model: DynamicModel) -> RoutingTable:
    table = RoutingStore(model.metadata.namespace, model.name).read(redis)
    assert table is not None
    return table


def run_until(
    driver: RolloutDriver,
    done: Any,
    feed: Any = None,
    timeout: float = 30.0,
    pause: float = 0.2,
) -> RolloutState:
    """Tick (feeding traffic for the state first) until `done(state)` or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.state
        if state is not None and feed is not None:
            feed(state)
        driver.tick()
        assert driver.state is not None
        if done(driver.state):
            return driver.state
        time.sleep(pause)
    raise AssertionError(f"not done in {timeout}s; last state: {driver.state}")


def test_a_good_candidate_goes_through_shadow_and_canary_to_promotion(
    rollout_model: ModelFactory,
    registry: Any,
    redis_client: Any,
    producer: Any,
    kafka: KafkaBroker,
) -> None:
    model = rollout_model()
    name = model.name
    traffic = Traffic(redis_client, model)
    first = driver_for(model, redis_client, producer)
    first.tick()
    assert routing(redis_client, model).stable == "1"

    registry.set_registered_model_alias(name, ALIAS_CANDIDATE, "2")
    first.tick()
    assert first.state is not None and first.state.stage == "shadow"
    table = routing(redis_client, model)
    assert (table.mode, table.candidate, table.weight) == ("shadow", "2", 0)

    # Every tick below runs in a fresh driver: each resumes from the record in Redis.
    seen: list[tuple[str, int]] = []

    def feed(state: RolloutState) -> None:
        if state.active:
            traffic.stage(state.stage, "1", "2")
            seen.append((state.stage, state.weight))

    state = first.state
    revisions = [table.revision]
    deadline = time.monotonic() + 40
    while state.stage != "promoted" and time.monotonic() < deadline:
        driver = driver_for(model, redis_client, producer)
        feed(state)
        driver.tick()
        assert driver.state is not None
        state = driver.state
        revisions.append(routing(redis_client, model).revision)
        time.sleep(0.2)

    assert state.stage == "promoted", state.reason
    assert state.stable == "2" and state.candidate is None
    assert {("shadow", 0), ("canary", 50), ("canary", 100)} <= set(seen)
    assert aliases(registry, name) == {ALIAS_CHAMPION: "2"}
    table = routing(redis_client, model)
    assert (table.stable, table.candidate, table.mode, table.weight) == ("2", None, "stable", 0)
    revisions.append(table.revision)
    assert revisions == sorted(revisions)
    assert len(set(revisions)) == 4  # shadow, 50 %, 100 %, promoted: one write each

    saved = read_rollout(redis_client, "test", name)
    assert saved is not None and saved.stage == "promoted"
    assert [(t.from_stage, t.to_stage) for t in saved.history] == [
        ("idle", "idle"),
        ("idle", "shadow"),
        ("shadow", "canary"),
        ("canary", "canary"),
        ("canary", "promoted"),
    ]
    events = control_events(kafka, model.topics.control, expected=5)
    assert [e.stage for e in events] == ["idle", "shadow", "canary", "canary", "promoted"]
    assert events[-1].reason == saved.history[-1].reason and "promoted" in events[-1].reason


def test_a_newer_candidate_waits_for_the_one_in_shadow(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model = rollout_model()
    traffic = Traffic(redis_client, model)
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
    driver.tick()
    assert driver.state is not None and driver.state.stage == "shadow"

    traffic.stage("shadow", "1", "2", n=5)  # a quarter of the shadow's evidence
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "3")  # the trainer again
    driver.tick()
    assert driver.state.stage == "shadow" and driver.state.candidate == "2"
    assert driver.state.reason.endswith("version 3 waits for this rollout to end")
    assert routing(redis_client, model).candidate == "2"

    def feed(state: RolloutState) -> None:
        if state.active and state.candidate == "2":
            traffic.stage(state.stage, "1", "2", n=10)

    state = run_until(driver, lambda s: s.stage == "promoted", feed)
    assert state.stable == "2" and "2" in state.decided and "3" not in state.decided
    assert all("superseded" not in t.reason for t in state.history)
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "2", ALIAS_CANDIDATE: "3"}
    driver.tick()
    assert driver.state.stage == "shadow" and driver.state.candidate == "3"
    table = routing(redis_client, model)
    assert (table.stable, table.candidate, table.mode) == ("2", "3", "shadow")


def test_a_worse_candidate_is_aborted_and_rolled_back(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model = rollout_model(strategy="canary")
    traffic = Traffic(redis_client, model)
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")

    def feed(state: RolloutState) -> None:
        if state.active:
            traffic.stage(state.stage, "1", "2", accuracy=0.6)

    state = run_until(driver, lambda s: s.stage == "aborted", feed)
    assert "canary 50% failed: accuracy 0.6000 vs stable 0.88" in state.reason
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "1"}
    table = routing(redis_client, model)
    assert (table.stable, table.candidate, table.mode) == ("1", None, "stable")

    # The aborted version is not tried again; the next one is.
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
    driver.tick()
    assert driver.state is not None and driver.state.stage == "aborted"
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "3")
    driver.tick()
    assert driver.state.stage == "canary" and driver.state.candidate == "3"


def test_missing_metrics_abort_once_the_budget_is_spent(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model = rollout_model(
        strategy="canary",
        canary={"steps": [50, 100], "stepSeconds": 0.5},
        analysis={"minLabeled": 20, "maxInconclusiveSeconds": 1.5},
    )
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
    started = time.monotonic()
    state = run_until(driver, lambda s: s.stage == "aborted")
    assert time.monotonic() - started >= 2.0  # hold 0.5 s + budget 1.5 s
    assert "canary 50% inconclusive for" in state.reason and "0 of 20 labeled" in state.reason
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "1"}
    assert routing(redis_client, model).mode == "stable"


def test_a_bad_estimate_from_the_drift_monitor_aborts_before_labels(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model = rollout_model(
        analysis={"minLabeled": 20, "estimate": {"maxDrop": 0.05, "minPredictions": 100}}
    )
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
    driver.tick()
    assert driver.state is not None and driver.state.stage == "shadow"
    store, now = EstimateStore("test", model.name), time.time()
    store.write(redis_client, "1", AccuracyEstimate(accuracy=0.9, rows=500, at=now))
    store.write(redis_client, "2", AccuracyEstimate(accuracy=0.95, rows=500, at=now))
    driver.tick()
    assert driver.state.stage == "shadow"  # a better estimate holds: no pass without labels
    store.write(redis_client, "2", AccuracyEstimate(accuracy=0.7, rows=500, at=now))
    driver.tick()
    assert driver.state.stage == "aborted"
    assert "shadow failed: estimated accuracy 0.7000 vs stable 0.9000 before labels" in (
        driver.state.reason
    )
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "1"}
    assert routing(redis_client, model).mode == "stable"


@pytest.mark.parametrize("kind", ["covariate", "concept"])
def test_drift_with_rollback_aborts_the_canary(
    kind: str, rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model = rollout_model(strategy="canary")
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
    driver.tick()
    drift = DriftEvent(
        event_id="e1",
        model=model.name,
        model_version="2",
        kind=kind,  # type: ignore[arg-type]
        detector="ks",
        detected_at=time.time(),
        score=0.4,
        features=["x1"],
    )
    redis_client.set(drift_key("test", model.name), encode(drift))
    driver.tick()
    assert driver.state is not None and driver.state.stage == "aborted"
    assert f"{kind} drift detected on version 2 during the canary" in driver.state.reason


def test_manual_strategy_advances_on_approval_commands(
    rollout_model: ModelFactory, registry: Any, redis_client: Any, producer: Any
) -> None:
    model = rollout_model(strategy="manual", canary={"steps": [100], "stepSeconds": 0.2})
    traffic = Traffic(redis_client, model)
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")

    def feed(state: RolloutState) -> None:
        if state.active:
            traffic.stage(state.stage, "1", "2")

    state = run_until(driver, lambda s: "waiting for approval" in s.reason, feed)
    assert state.stage == "shadow"
    driver.send_command(Command(action="approve", version="2"))
    state = run_until(driver, lambda s: s.stage == "canary", feed)
    driver.send_command(Command(action="approve", version="2"))
    state = run_until(driver, lambda s: s.stage == "promoted", feed)
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "2"}


def test_a_failing_redis_aborts_restores_aliases_and_routing_once_back(
    rollout_model: ModelFactory, registry: Any, producer: Any, tmp_path: Any
) -> None:
    import redis

    server = RedisServer(log_path=tmp_path / "redis.log").start()
    port = server.port
    client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        model = rollout_model(redis_url=server.url, strategy="canary")
        traffic = Traffic(client, model)
        driver = driver_for(model, client, producer)
        driver.tick()
        registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
        driver.tick()
        assert driver.state is not None and driver.state.stage == "canary"
        traffic.stage("canary", "1", "2")
        driver.tick()
        before = routing(client, model)
        assert (before.mode, before.weight) == ("canary", 50)

        server.stop()
        decision = driver.tick()
        assert decision is not None and decision.state.stage == "aborted"
        assert decision.state.reason.startswith("metrics source failed: redis")
        assert not driver.ready
        assert aliases(registry, model.name) == {ALIAS_CHAMPION: "1"}  # restored at once

        server = RedisServer(port=port, log_path=tmp_path / "redis-again.log").start()
        driver.tick()  # Redis is back, empty: routing and the record are written again
        assert driver.ready
        after = routing(client, model)
        assert (after.stable, after.candidate, after.mode) == ("1", None, "stable")
        assert after.revision > before.revision
        saved = read_rollout(client, "test", model.name)
        assert saved is not None and saved.stage == "aborted"
    finally:
        client.close()
        server.stop()


def test_alias_changes_wait_out_a_registry_outage_even_across_a_restart(
    rollout_model: ModelFactory,
    registry: Any,
    redis_client: Any,
    producer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    model = rollout_model(strategy="canary")
    traffic = Traffic(redis_client, model)
    driver = driver_for(model, redis_client, producer)
    driver.tick()
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
    driver.tick()
    assert driver.state is not None and driver.state.stage == "canary"

    # The registry goes away (nothing listens there) while the candidate fails.
    unreachable = ModelRegistry("http://127.0.0.1:9", model.spec.model.registry.name)
    down = RolloutDriver(model, redis_client, unreachable, producer)
    traffic.stage("canary", "1", "2", accuracy=0.5)
    decision = down.tick()
    assert decision is not None and decision.state.stage == "aborted"
    assert {type(a).__name__ for a in down.pending} == {"SetAlias", "DeleteAlias"}
    assert routing(redis_client, model).mode == "stable"  # traffic left the candidate anyway
    assert aliases(registry, model.name)[ALIAS_CANDIDATE] == "2"  # not yet restored

    down.tick()
    assert down.state is not None and down.state.stage == "aborted" and down.pending

    # The trainer registers version 3 meanwhile. A restarted driver, with the registry
    # back, first finishes the alias changes from the record, then starts version 3.
    registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "3")
    back = driver_for(model, redis_client, producer)
    back.tick()
    assert not back.pending
    assert back.state is not None and back.state.stage == "aborted"
    assert aliases(registry, model.name) == {ALIAS_CHAMPION: "1", ALIAS_CANDIDATE: "3"}
    back.tick()
    assert back.state.stage == "canary" and back.state.candidate == "3"


def test_a_redis_outage_is_logged_once_and_its_end_once(
    rollout_model: ModelFactory,
    registry: Any,
    producer: Any,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The operator ticks every few seconds: an unreachable Redis is one warning,
    not one per tick (the source-error counter still counts each)."""
    import redis

    server = RedisServer(log_path=tmp_path / "redis.log").start()
    port = server.port
    client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        driver = driver_for(rollout_model(redis_url=server.url), client, producer)
        driver.tick()
        assert driver.ready
        server.stop()
        with caplog.at_level(logging.INFO, logger="driftline.rollout.driver"):
            for _ in range(3):
                driver.tick()
            assert not driver.ready
            server = RedisServer(port=port, log_path=tmp_path / "redis-again.log").start()
            driver.tick()
            driver.tick()
        assert driver.ready
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert sum("redis unavailable" in m for m in said) == 1, said
        assert sum("redis answers again" in m for m in said) == 1, said
    finally:
        client.close()
        server.stop()
