"""The rollout driver: reads the world, runs the state machine, carries out its actions.

One `tick()`:

1. resume the state from Redis on the first tick (a restarted driver carries on);
2. read a snapshot: the registry's aliases (MLflow), a pending command, the latest
   drift event and, while a candidate is under test, the counters since the rollout
   began (Redis). A failed read is recorded in the snapshot, never raised;
3. `machine.step(state, snapshot, policy, now)`;
4. carry out the actions: aliases in MLflow, events on the control topic, and the
   routing table in Redis. An alias or event action that fails stays pending and is
   retried on later ticks; while alias changes are pending the registry is not read,
   so a new rollout never starts on half-moved aliases;
5. write the routing table the state means when Redis holds another one (also
   after Redis lost its data), with a revision above any written before (a
   millisecond timestamp, so also above those of a driver before a restart);
6. save the record (state, pending actions, revision) in Redis.

The state lives in memory between ticks, so a driver that loses Redis mid-canary
still decides (the machine aborts: the metrics source failed), restores the aliases
and, once Redis answers again, rolls routing back and saves. Actions are
idempotent, so replaying a tick after a crash repeats no effect; an event may be
published twice.

The local runtime runs this in `python -m driftline.rollout`; the operator calls
`tick()` from a kopf timer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, get_args

import msgspec
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from driftline.api import DynamicModel
from driftline.api.events import encode
from driftline.api.status import RolloutStage
from driftline.common.kafka import ensure_topics, make_producer
from driftline.common.redis_state import AccuracyEstimate, RoutingStore
from driftline.common.registry import RegistryError
from driftline.rollout import metrics
from driftline.rollout.actions import Action, DeleteAlias, SetAlias, SetRouting
from driftline.rollout.machine import Decision, step
from driftline.rollout.policy import Policy
from driftline.rollout.registry import ModelRegistry
from driftline.rollout.rollout_state import RolloutState, routing_for
from driftline.rollout.settings import RolloutSettings
from driftline.rollout.snapshot import Command, RegistryView, Snapshot
from driftline.rollout.store import MetricsSource, Record, RolloutStore

log = logging.getLogger(__name__)

STAGES: tuple[RolloutStage, ...] = ("idle", "shadow", "canary", "promoted", "aborted")

_transitions = Counter(
    metrics.TRANSITIONS_TOTAL, "Rollout stage changes.", ["model", "from_stage", "to_stage"]
)
_stage = Gauge(metrics.STAGE, "1 for the current rollout stage.", ["model", "stage"])
_weight = Gauge(metrics.CANDIDATE_WEIGHT, "Percent of traffic on the candidate.", ["model"])
_source_errors = Counter(
    metrics.SOURCE_ERRORS_TOTAL, "Ticks on which a source could not be read.", ["model", "source"]
)
_action_failures = Counter(
    metrics.ACTION_FAILURES_TOTAL, "Actions that failed (retried later).", ["model", "action"]
)
# Every source and action is counted from 0 at start: a dashboard shows "no failures"
# as a 0 line, never as an empty panel.
SOURCES = ("redis", "registry")
ACTIONS: tuple[str, ...] = tuple(t.__name__ for t in get_args(Action))
_guard_rollbacks = Counter(
    metrics.GUARD_ROLLBACKS_TOTAL, "Promotions rolled back by the guard.", ["model"]
)
_pending = Gauge(metrics.PENDING_ACTIONS, "Actions not yet carried out.", ["model"])
_tick_seconds = Histogram(metrics.TICK_SECONDS, "Time one rollout tick takes.", ["model"])


class Registry(Protocol):
    """What the driver needs of a registry (`ModelRegistry` is the MLflow one)."""

    def view(self) -> RegistryView: ...

    def set_alias(self, alias: str, version: str) -> None: ...

    def delete_alias(self, alias: str, version: str) -> None: ...


class RolloutDriver:
    def __init__(
        self,
        model: DynamicModel,
        redis: Any,
        registry: Registry,
        producer: Any | None = None,
        *,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self.policy = policy or Policy.from_model(model)
        self.label = f"{model.metadata.namespace}/{model.name}"
        self._redis = redis
        self._registry = registry
        self._producer = producer
        self._clock = clock
        self._topic = model.topics.control
        namespace = model.metadata.namespace
        self._store = RolloutStore(namespace, model.name)
        self._metrics = MetricsSource(namespace, model.name)
        self._routing = RoutingStore(namespace, model.name)
        self.state: RolloutState | None = None
        self.pending: list[Action] = []
        self._revision = 0
        self._saved: bytes | None = None
        self._redis_ok = False
        self._down: set[str] = set()  # sources whose outage was logged
        for source in SOURCES:
            _source_errors.labels(self.label, source)
        for action in ACTIONS:
            _action_failures.labels(self.label, action)

    @property
    def ready(self) -> bool:
        """The state is known and Redis answered on the last tick."""
        return self.state is not None and self._redis_ok

    def tick(self, now: float | None = None) -> Decision | None:
        """One round of read, decide, act. None when the state cannot be loaded yet."""
        now = self._clock() if now is None else now
        with _tick_seconds.labels(self.label).time():
            if self.state is None and not self._resume():
                return None
            state = self.state
            assert state is not None
            decision = step(state, self._observe(state, now), self.policy, now)
            self.state = decision.state
            for t in decision.transitions:
                _transitions.labels(self.label, t.from_stage, t.to_stage).inc()
                if (t.from_stage, t.to_stage) == ("promoted", "aborted"):  # only the guard
                    _guard_rollbacks.labels(self.label).inc()
                log.info(
                    "%s: %s -> %s (candidate %s, weight %d): %s",
                    self.label,
                    t.from_stage,
                    t.to_stage,
                    t.candidate,
                    t.weight,
                    t.reason,
                )
            self.pending = self._carry_out([*self.pending, *decision.actions], now)
            self._route(routing_for(decision.state), now)
            self._save(now)
            self._export(decision.state)
            return decision

    def send_command(self, command: Command) -> None:
        """Queue an approve/abort for the next tick (the CLI and tests use the same key)."""
        self._store.send_command(self._redis, command)

    def close(self, timeout: float = 5.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)

    # --- reading ------------------------------------------------------------------------

    def _resume(self) -> bool:
        try:
            record = self._store.load(self._redis)
        except RedisError as exc:
            self._source_failed("redis", exc)
            return False
        self._source_answered("redis")
        if record is None:
            self.state = RolloutState()
        else:
            self.state = record.state
            self.pending = list(record.pending)
            self._revision = record.revision
            log.info("%s: resumed at %s: %s", self.label, record.state.stage, record.state.reason)
        return True

    def _observe(self, state: RolloutState, now: float) -> Snapshot:
        registry = None
        if not any(isinstance(a, SetAlias | DeleteAlias) for a in self.pending):
            try:
                registry = self._registry.view()
            except RegistryError as exc:
                self._source_failed("registry", exc)
            else:
                self._source_answered("registry")
        command = drift = evidence = guard = None
        estimates: dict[str, AccuracyEstimate] = {}
        error = None
        try:
            command = self._store.take_command(self._redis)
            drift = self._metrics.drift(self._redis)
            if state.active and state.candidate is not None:
                evidence = self._metrics.evidence(
                    self._redis,
                    stable=state.stable,
                    candidate=state.candidate,
                    since=state.started_at if state.started_at is not None else state.since,
                    now=now,
                    segments=self.policy.segments if self.policy.gates_segments else (),
                )
                if self.policy.gates_estimate:
                    estimates = self._metrics.estimates(self._redis)
            window = state.guard
            if window is not None and state.stage == "promoted":
                guard = self._metrics.guard(
                    self._redis,
                    champion=window.champion,
                    previous=window.previous,
                    baseline=state.baseline,
                    since=window.since,
                    now=now,
                )
            self._source_answered("redis")
        except RedisError as exc:
            self._source_failed("redis", exc)
            error = f"redis: {exc}"
        return Snapshot(
            registry=registry,
            evidence=evidence,
            metrics_error=error,
            drift=drift,
            command=command,
            guard=guard,
            estimates=estimates,
        )

    def _source_failed(self, source: str, exc: Exception) -> None:
        if source == "redis":
            self._redis_ok = False
        _source_errors.labels(self.label, source).inc()
        # Once per outage (the counter counts every failed tick), not once per tick.
        if source in self._down:
            log.debug("%s: %s still unavailable: %s", self.label, source, exc)
        else:
            self._down.add(source)
            log.warning("%s: %s unavailable (retried every tick): %s", self.label, source, exc)

    def _source_answered(self, source: str) -> None:
        if source == "redis":
            self._redis_ok = True
        if source in self._down:
            self._down.discard(source)
            log.info("%s: %s answers again", self.label, source)

    # --- acting -------------------------------------------------------------------------

    def _carry_out(self, actions: Sequence[Action], now: float) -> list[Action]:
        """Carry out each action; return those that failed (retried next tick)."""
        failed: list[Action] = []
        for action in actions:
            try:
                self._do(action, now)
            except Exception as exc:  # a failing dependency delays an action, never the loop
                _action_failures.labels(self.label, _name(action)).inc()
                log.warning("%s: %s failed, will retry: %s", self.label, _name(action), exc)
                if not isinstance(action, SetRouting):  # routing is rewritten every tick
                    failed.append(action)
        return failed

    def _do(self, action: Action, now: float) -> None:
        if isinstance(action, SetRouting):
            if self._redis_ok:  # else the table is written once Redis answers (`_route`)
                self._write_routing(action, now)
        elif isinstance(action, SetAlias):
            self._registry.set_alias(action.alias, action.version)
        elif isinstance(action, DeleteAlias):
            self._registry.delete_alias(action.alias, action.version)
        elif self._producer is not None:
            self._producer.produce(self._topic, key=self.model.name, value=encode(action.event))
            self._producer.poll(0)

    def _route(self, desired: SetRouting, now: float) -> None:
        if not self._redis_ok:
            return
        try:
            self._write_routing(desired, now)
        except RedisError as exc:
            self._source_failed("redis", exc)

    def _write_routing(self, desired: SetRouting, now: float) -> None:
        if desired.stable is None:
            return  # nothing to serve yet (no champion)
        current = self._routing.read(self._redis)
        if current is not None:
            self._revision = max(self._revision, current.revision)
        if desired.same_as(current):
            return
        # Milliseconds since the epoch, or one above the last revision if that is higher:
        # inference ignores tables older than the one it holds, so revisions must rise
        # also after Redis lost its data and this driver restarted.
        self._revision = max(self._revision + 1, int(now * 1000))
        self._routing.write(self._redis, desired.table(self._revision, now))

    def _save(self, now: float) -> None:
        assert self.state is not None
        record = Record(
            state=self.state, pending=tuple(self.pending), revision=self._revision, saved_at=now
        )
        body = msgspec.json.encode(msgspec.structs.replace(record, saved_at=0.0))
        if body == self._saved or not self._redis_ok:
            return
        try:
            self._store.save(self._redis, record)
        except RedisError as exc:
            self._source_failed("redis", exc)
            return
        self._saved = body

    def _export(self, state: RolloutState) -> None:
        for stage in STAGES:
            _stage.labels(self.label, stage).set(1 if stage == state.stage else 0)
        _weight.labels(self.label).set(state.weight)
        _pending.labels(self.label).set(len(self.pending))


def _name(action: Action) -> str:
    return type(action).__name__


def build(settings: RolloutSettings) -> RolloutDriver:
    """The driver of the model in `settings`, with its Redis, MLflow and Kafka clients."""
    model = settings.model
    conn = settings.connections
    redis = conn.redis.client(
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    registry = ModelRegistry(conn.mlflow_tracking_uri, model.spec.model.registry.name)
    producer = make_producer(conn.kafka, **{"message.timeout.ms": 120_000})
    try:
        ensure_topics(conn.kafka, [model.topics.control], partitions=model.spec.kafka.partitions)
    except Exception as exc:  # the producer retries; events wait in its queue
        log.warning("could not ensure the control topic %s: %s", model.topics.control, exc)
    return RolloutDriver(model, redis, registry, producer)
