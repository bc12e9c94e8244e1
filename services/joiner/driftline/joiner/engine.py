"""The join of one batch, in two atomic Redis steps, independent of Kafka.

    absorb   store every arrival (new, duplicate or late) and return the state of
             each request that may have work
    plan     in Python: scores, agreement and the labeled example each state owes
    settle   set the markers and add the counters of exactly what was not done
             before, and note the new examples in the outbox of their source

The caller then sends the examples, and only once they are durable clears the
outboxes and commits its offsets. A crash anywhere loses nothing and doubles
nothing: before settle, the replayed batch finds the same work; after settle, the
markers stop a second count and the outbox still names the examples owed, which
`recover` rebuilds for whatever the labeled topic does not hold yet.

The clock is an argument (`now`), so the property tests drive windows and expiry
without waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from driftline.api.events import LabeledExample
from driftline.joiner.join import (
    QUALITY_FIELDS,
    Agreement,
    Score,
    labeled_example,
    outcome_of,
    plan_request,
    predictions_of,
)
from driftline.joiner.store import Absorbed, Arrival, JoinStore, Outbox, SettleBatch, Swept


@dataclass(frozen=True)
class Source:
    """An arrival and the source it came from (the worker: its topic partition).

    Each source has one outbox; whoever replays the source recovers it."""

    arrival: Arrival
    outbox: str


@dataclass
class BatchResult:
    statuses: list[int]
    """Per arrival: store.ARRIVAL_NEW, ARRIVAL_DUPLICATE or ARRIVAL_LATE."""
    examples: list[LabeledExample] = field(default_factory=list)
    """Newly emitted: the caller must send them before it commits."""
    outboxes: list[str] = field(default_factory=list)
    """Sources whose outboxes name those examples: clear them once they are durable."""
    scores: list[Score] = field(default_factory=list)
    agreements: list[Agreement] = field(default_factory=list)
    expired_predictions: int = 0
    expired_outcomes: int = 0


@dataclass
class Absorbing:
    """A batch between its two phases."""

    absorbed: Absorbed
    batch: SettleBatch
    planned: list[Score | Agreement | LabeledExample]
    outbox_of: dict[str, str]


class JoinEngine:
    def __init__(self, store: JoinStore, task: str, agreement_tolerance: float = 0.01) -> None:
        self.store = store
        self.task = task
        self.tolerance = agreement_tolerance
        self.fields = QUALITY_FIELDS[task]

    def process(
        self, sources: Sequence[Source], now: float, start_offsets: dict[int, int]
    ) -> BatchResult:
        """Absorb, plan and settle one batch. `start_offsets`: see `Outbox`."""
        return self.settle(self.absorb(sources, now), now, start_offsets)

    def absorb(self, sources: Sequence[Source], now: float) -> Absorbing:
        """Phase 1: store the arrivals; what they made joinable is planned."""
        absorbed = self.store.absorb([s.arrival for s in sources], now)
        # An example is owed to the outbox of the request's last arrival in the batch:
        # if the batch is lost, that arrival's source replays it.
        outbox_of = {s.arrival.request_id: s.outbox for s in sources}
        batch = SettleBatch(self.fields)
        planned: list[Score | Agreement | LabeledExample] = []
        quality = self.store.quality
        for request_id, state in absorbed.states.items():
            plan = plan_request(request_id, state, self.task, self.tolerance)
            for score in plan.scores:
                key = quality.counters(score.version, score.variant).bucket_key(now)
                values = [score.fields.get(f, 0.0) for f in self.fields]
                batch.score(request_id, score.variant, key, values)
                planned.append(score)
            if plan.agreement is not None:
                a = plan.agreement
                key = quality.agreement(a.stable_version, a.candidate_version).bucket_key(now)
                batch.agree(request_id, key, a.agreed)
                planned.append(a)
            if plan.emission is not None:
                example = plan.emission.example
                outbox_key = self.store.outbox_key(outbox_of[request_id])
                batch.emit(request_id, example.variant, outbox_key)
                planned.append(example)
        return Absorbing(absorbed, batch, planned, outbox_of)

    def settle(
        self, absorbing: Absorbing, now: float, start_offsets: dict[int, int]
    ) -> BatchResult:
        """Phase 2: mark and count what nobody did before (another replica may have)."""
        absorbed = absorbing.absorbed
        result = BatchResult(
            absorbed.statuses,
            expired_predictions=absorbed.expired_predictions,
            expired_outcomes=absorbed.expired_outcomes,
        )
        flags = self.store.settle(absorbing.batch, start_offsets)
        boxes: set[str] = set()
        for item, took_effect in zip(absorbing.planned, flags, strict=True):
            if not took_effect:
                continue
            if isinstance(item, Score):
                result.scores.append(item)
            elif isinstance(item, Agreement):
                result.agreements.append(item)
            else:
                result.examples.append(item)
                boxes.add(absorbing.outbox_of[item.request_id])
        result.outboxes = sorted(boxes)
        return result

    def rebuild(self, request_id: str) -> LabeledExample | None:
        """The example already marked emitted for `request_id`, from its state."""
        state = self.store.state(request_id)
        variant = state.get("e")
        outcome = outcome_of(request_id, state)
        if variant is None or outcome is None:
            return None
        prediction = predictions_of(request_id, state).get(variant)
        return None if prediction is None else labeled_example(prediction, outcome)

    def recover(self, outbox: Outbox, present: set[str]) -> list[LabeledExample]:
        """The examples of `outbox` missing from the labeled topic (`present` holds
        the request ids found there from `outbox.start_offsets` on)."""
        missing: list[LabeledExample] = []
        for request_id in dict.fromkeys(outbox.request_ids):
            if request_id in present:
                continue
            example = self.rebuild(request_id)
            if example is not None:
                missing.append(example)
        return missing

    def sweep(self, now: float, limit: int = 1000) -> Swept:
        return self.store.sweep(now, limit)
