"""Stateful property test: the join engine on a real Redis against the reference.

Hypothesis interleaves predictions (several variants per request), outcomes,
duplicates, clock jumps past the window and the grace period, expiry sweeps,
batches of any size, and crashes at every point of a batch (after phase 1, after
phase 2, halfway through sending, after sending), each followed by a restart that
settles the outboxes and replays the uncommitted batch. After every step:

- every arrival got the status the reference gives it (new, duplicate, late);
- the labeled topic holds exactly the reference's examples, each request id once
  per generation, built from the served prediction;
- expiry was accounted exactly as the reference accounts it;

and at the end, the live quality and agreement counters in Redis equal the
reference's sums.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from driftline.api.events import LabeledExample, Outcome, Prediction, encode
from driftline.joiner.engine import JoinEngine
from driftline.joiner.recovery import settle_outboxes
from driftline.joiner.store import Absorbed, Arrival, JoinStore
from tests.joiner.reference import ReferenceJoin

pytestmark = pytest.mark.integration

WINDOW, GRACE, START = 100.0, 30.0, 50_000.0
SOURCES = ("predictions", "outcomes")
# Variants one request carries: served by stable or candidate (canary), with the
# candidate in shadow beside stable, and the frozen baseline beside either.
SCENARIOS = [
    ("stable",),
    ("candidate",),
    ("stable", "shadow"),
    ("stable", "baseline"),
    ("candidate", "baseline"),
    ("stable", "shadow", "baseline"),
]
VERSIONS = {"stable": "3", "candidate": "4", "shadow": "4", "baseline": "1"}
CRASHES = ["none", "after_absorb", "after_settle", "half_sent", "after_send"]


def make_machine(redis_client: Any) -> type[RuleBasedStateMachine]:
    class JoinMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.name = f"m{uuid.uuid4().hex[:8]}"
            self.now = START
            self.reference = ReferenceJoin(WINDOW, GRACE)
            self.logs: dict[str, list[Arrival]] = {s: [] for s in SOURCES}
            self.committed = dict.fromkeys(SOURCES, 0)
            self.unsent: list[tuple[str, Arrival]] = []
            self.sent: list[tuple[str, Arrival]] = []
            self.topic: list[LabeledExample] = []
            self.expired = [0, 0]
            self.requests = 0
            self.restart()

        def restart(self) -> None:
            """A new process: nothing survives but Redis and the topics."""
            self.store = JoinStore(redis_client, "prop", self.name, window=WINDOW, grace=GRACE)
            self.engine = JoinEngine(self.store, "classification")

        # --- the stream ----------------------------------------------------------

        @precondition(lambda self: len(self.unsent) < 8)
        @rule(
            scenario=st.sampled_from(SCENARIOS),
            outputs=st.lists(st.integers(0, 1), min_size=3, max_size=3),
            label=st.integers(0, 1),
            with_outcome=st.booleans(),
            p=st.floats(0.05, 0.95),
        )
        def new_request(
            self, scenario: tuple[str, ...], outputs: list[int], label: int,
            with_outcome: bool, p: float,
        ) -> None:  # fmt: skip
            rid = f"r,{self.requests}\t#"  # ids are the users': any text
            self.requests += 1
            for variant, output in zip(scenario, outputs, strict=False):
                prediction = Prediction(
                    request_id=rid, model=self.name, model_version=VERSIONS[variant],
                    variant=variant,  # type: ignore[arg-type]
                    features={"x": float(output), "c": "a"}, output=float(output),
                    ts=self.now, scores=[1 - p, p] if output else None,
                )  # fmt: skip
                payload = encode(prediction).decode()
                arrival = Arrival(rid, f"p:{variant}", payload, "predictions")
                self.unsent.append(("predictions", arrival))
            if with_outcome:
                outcome = Outcome(request_id=rid, label=float(label), ts=self.now)
                payload = encode(outcome).decode()
                self.unsent.append(("outcomes", Arrival(rid, "o", payload, "outcomes")))

        @precondition(lambda self: self.unsent)
        @rule(data=st.data(), count=st.integers(1, 4))
        def send(self, data: st.DataObject, count: int) -> None:
            for _ in range(min(count, len(self.unsent))):
                index = data.draw(st.integers(0, len(self.unsent) - 1))
                source, arrival = self.unsent.pop(index)
                self.logs[source].append(arrival)
                self.sent.append((source, arrival))

        @precondition(lambda self: self.sent)
        @rule(data=st.data())
        def send_duplicate(self, data: st.DataObject) -> None:
            source, arrival = data.draw(st.sampled_from(self.sent))
            self.logs[source].append(arrival)

        # Mostly small steps (requests join), sometimes past the window (late,
        # expired) or past the grace period (forgotten).
        @rule(
            seconds=st.sampled_from([0.5] * 6 + [5.0, 40.0, WINDOW, WINDOW + 0.5, WINDOW + GRACE])
        )
        def advance(self, seconds: float) -> None:
            self.now += seconds

        @rule()
        def sweep(self) -> None:
            swept = self.engine.sweep(self.now)
            self.reference.sweep(self.now)
            self.expired[0] += swept.expired_predictions
            self.expired[1] += swept.expired_outcomes

        # --- the joiner ----------------------------------------------------------

        @precondition(lambda self: any(len(self.logs[s]) > self.committed[s] for s in SOURCES))
        @rule(
            sizes=st.tuples(st.integers(0, 8), st.integers(0, 8)),
            crash=st.sampled_from(CRASHES),
            downtime=st.sampled_from(["none", "none", "short", "past_window"]),
        )
        def consume(self, sizes: tuple[int, int], crash: str, downtime: str) -> None:
            batch = self.next_batch(sizes)
            if not batch:
                return
            if crash == "after_absorb":
                absorbing = self.engine.absorb(batch, self.now, {0: len(self.topic)})
                self.check(batch, absorbing.absorbed)
            else:
                result = self.run_batch(batch)
                sent = {"none": 1.0, "after_settle": 0.0, "half_sent": 0.5, "after_send": 1.0}
                self.topic += result.examples[: int(len(result.examples) * sent[crash])]
                if crash == "none":
                    self.store.trim_outboxes(result.outboxes)
                    self.commit(batch)
                    return
            if downtime != "none":
                # Another replica sweeps while this one is down: a little later, or
                # just past the window of the batch's requests. (A downtime past the
                # forgetting horizon is a test of its own, not the reference's.)
                starts = [self.reference.current[a.request_id].start for a in batch]
                later = 5.0 if downtime == "short" else max(starts) + WINDOW + 0.5 - self.now
                self.now = max(self.now, min(self.now + later, min(starts) + WINDOW + GRACE))
                self.sweep()
            # Restart: settle what the outboxes owe, then replay the uncommitted batch.
            self.restart()
            settle_outboxes(self.engine, SOURCES, self.scan, self.topic.extend, self.now)
            result = self.run_batch(batch)
            self.topic += result.examples
            self.store.trim_outboxes(result.outboxes)
            self.commit(batch)

        @precondition(lambda self: any(len(self.logs[s]) > self.committed[s] for s in SOURCES))
        @rule(sizes=st.tuples(st.integers(0, 8), st.integers(0, 8)), settle_first=st.booleans())
        def consume_twice_at_once(self, sizes: tuple[int, int], settle_first: bool) -> None:
            """A replica that lost its partitions without noticing still joins the
            batch that their new owner joins too."""
            batch = self.next_batch(sizes)
            zombie, owner = (JoinEngine(self.store, "classification") for _ in range(2))
            phase1 = []
            for engine in (zombie, owner):
                phase1.append(engine.absorb(batch, self.now, {0: len(self.topic)}))
                self.check(batch, phase1[-1].absorbed)
            step = 1 if settle_first else -1
            for engine, absorbing in zip((zombie, owner)[::step], phase1[::step], strict=True):
                result = engine.settle(absorbing, self.now)
                self.topic += result.examples
                self.store.trim_outboxes(result.outboxes)
            self.commit(batch)

        @precondition(lambda self: all(len(self.logs[s]) > self.committed[s] for s in SOURCES))
        @rule(
            sizes=st.tuples(st.integers(1, 8), st.integers(1, 8)),
            absorb_first=st.sampled_from(SOURCES),
            settle_first=st.sampled_from(SOURCES),
        )
        def consume_on_two_replicas(
            self, sizes: tuple[int, int], absorb_first: str, settle_first: str
        ) -> None:
            """One replica per source, both between their phases at the same time."""
            parts = {
                source: self.logs[source][self.committed[source] :][:size]
                for source, size in zip(SOURCES, sizes, strict=True)
            }
            engines = {s: JoinEngine(self.store, "classification") for s in SOURCES}
            absorbing = {}
            for source in sorted(SOURCES, key=lambda s: s != absorb_first):
                absorbing[source] = engines[source].absorb(
                    parts[source], self.now, {0: len(self.topic)}
                )
                self.check(parts[source], absorbing[source].absorbed)
            order = sorted(SOURCES, key=lambda s: s != settle_first)
            for source in order:
                result = engines[source].settle(absorbing[source], self.now)
                self.topic += result.examples
                self.store.trim_outboxes(result.outboxes)
                self.commit(parts[source])

        def next_batch(self, sizes: tuple[int, int]) -> list[Arrival]:
            return [
                arrival
                for source, size in zip(SOURCES, sizes, strict=True)
                for arrival in self.logs[source][self.committed[source] :][:size]
            ]

        def run_batch(self, batch: list[Arrival]) -> Any:
            absorbing = self.engine.absorb(batch, self.now, {0: len(self.topic)})
            self.check(batch, absorbing.absorbed)
            return self.engine.settle(absorbing, self.now)

        def scan(self, start: dict[int, int]) -> set[str]:
            return {e.request_id for e in self.topic[start.get(0, 0) :]}

        def commit(self, batch: list[Arrival]) -> None:
            for arrival in batch:
                self.committed[arrival.source] += 1

        def check(self, batch: list[Arrival], absorbed: Absorbed) -> None:
            """Phase 1 gave each arrival the reference's status, and accounted expiry."""
            expected = [
                self.reference.arrive(a.request_id, a.field, a.payload.encode(), self.now)
                for a in batch
            ]
            assert absorbed.statuses == expected
            self.expired[0] += absorbed.expired_predictions
            self.expired[1] += absorbed.expired_outcomes

        # --- what must hold ------------------------------------------------------

        @invariant()
        def labeled_topic_matches_the_reference(self) -> None:
            emitted = Counter(e.request_id for e in self.topic)
            assert emitted == self.reference.joined()
            assert sorted(self.topic, key=_order) == sorted(self.reference.examples(), key=_order)

        @invariant()
        def expiry_is_accounted_once(self) -> None:
            assert self.expired == [
                self.reference.expired_predictions,
                self.reference.expired_outcomes,
            ]

        def teardown(self) -> None:
            quality = self.store.quality
            span = self.now - START + 60
            for (version, variant), sums in self.reference.quality().items():
                got = quality.counters(version, variant).read(redis_client, span, now=self.now)
                assert set(got) == {k for k, v in sums.items() if v}
                for name, value in sums.items():
                    assert got.get(name, 0.0) == pytest.approx(value, rel=1e-9, abs=1e-9)
            for (stable, candidate), (compared, agreed) in self.reference.agreement().items():
                got = quality.agreement(stable, candidate).read(redis_client, span, now=self.now)
                assert (got.get("compared", 0), got.get("agreed", 0)) == (compared, agreed)
            keys = list(redis_client.scan_iter(match=f"driftline:prop:{self.name}:*", count=1000))
            if keys:
                redis_client.delete(*keys)

    return JoinMachine


def _order(example: LabeledExample) -> tuple[str, float]:
    return example.request_id, example.ts_label


def test_join_matches_the_reference(redis_client: Any) -> None:
    run_state_machine_as_test(
        make_machine(redis_client),
        settings=settings(
            max_examples=120,
            stateful_step_count=80,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
