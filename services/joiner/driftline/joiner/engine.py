"""The join of one batch in two atomic Redis steps, independent of Kafka.

    absorb   store every arrival (new, duplicate or late), claim the work it made
             possible (scores, agreement, labeled example) and name the claims in
             the outbox of their source, with a flag for the batch's counters
    plan     in Python: what the claims add (`quality_fields`, and `segment_fields`
             per segment group), the examples
    admit    capped segments: which new values Redis keeps apart (lua/admit.lua);
             the others are folded into `other`
    settle   add each source's counters if its batch flag is still set, and
             remove the flag in the same step

The caller then sends the examples, and only once they are durable commits its
offsets and trims the batch's outbox entries. A crash anywhere loses nothing and doubles
nothing: before absorb, the replayed batch finds the same work; after it, the
claims stop a second claim, and the outbox still names what is owed: `recover`
adds the counters whose flag is still set and rebuilds the examples that the
labeled topic does not hold.

The clock is an argument (`now`), so the property tests drive windows and expiry
without waiting.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from driftline.api.events import LabeledExample
from driftline.common.redis_state import (
    BUCKET_SECONDS,
    SEGMENT_MISSING,
    SEGMENT_OTHER,
    segment_field,
)
from driftline.joiner.join import (
    AgreementSums,
    QualitySums,
    Scoring,
    SegmentSums,
    Share,
    plan_claim,
)
from driftline.joiner.segments import Segment
from driftline.joiner.store import Absorbed, Arrival, Increments, JoinStore, Outbox, Swept


@dataclass
class Absorbing:
    """A batch between its two phases."""

    absorbed: Absorbed
    token: str
    examples: list[LabeledExample]
    shares: dict[str, Share]
    """What each source's claims add."""
    entries: dict[str, int]
    """Outbox entries added, per source."""


@dataclass
class BatchResult:
    statuses: list[int]
    """Per arrival: store.ARRIVAL_NEW, ARRIVAL_DUPLICATE or ARRIVAL_LATE."""
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    """Arrivals by side and status."""
    examples: list[LabeledExample] = field(default_factory=list)
    """Claimed by this batch: the caller must send them before it commits."""
    outboxes: dict[str, int] = field(default_factory=dict)
    """How many entries this batch added to each source's outbox: trim them once
    the examples are durable (`JoinStore.trim_outboxes`)."""
    quality: QualitySums = field(default_factory=dict)
    """Counters this batch added (for the process's Prometheus metrics)."""
    agreement: AgreementSums = field(default_factory=dict)
    segments: SegmentSums = field(default_factory=dict)
    """Per segment group: counters this batch added."""
    folded: dict[str, int] = field(default_factory=dict)
    """Per segment: scored predictions counted as `other` because its cap was reached."""
    expired_predictions: int = 0
    expired_outcomes: int = 0

    def merge(self, other: BatchResult) -> None:
        """Add `other`'s counters to these (examples and statuses are left alone)."""
        for group, sums in other.quality.items():
            into = self.quality.setdefault(group, {})
            for name, value in sums.items():
                into[name] = into.get(name, 0.0) + value
        for key, sums in other.segments.items():
            into = self.segments.setdefault(key, {})
            for name, value in sums.items():
                into[name] = into.get(name, 0.0) + value
        for segment, n in other.folded.items():
            self.folded[segment] = self.folded.get(segment, 0) + n
        for group, (compared, agreed) in other.agreement.items():
            counts = self.agreement.setdefault(group, [0, 0])
            counts[0] += compared
            counts[1] += agreed


ADMITTED_FOR_SECONDS = 60.0
"""How long the engine trusts what it learned of a segment's admitted values: each
look-up after that also keeps the set in Redis from expiring."""


class JoinEngine:
    def __init__(
        self,
        store: JoinStore,
        task: str,
        agreement_tolerance: float = 0.01,
        *,
        segments: tuple[Segment, ...] = (),
        binary: bool = False,
    ) -> None:
        self.store = store
        self.task = task
        self.tolerance = agreement_tolerance
        self.scoring = Scoring(task, agreement_tolerance, segments, binary)
        self._admitting = {s.name: s.max_values for s in segments if s.admits}
        self._keys: dict[tuple[str, str, str, int], str] = {}
        self._segment_keys: dict[tuple[str, str, str, int], str] = {}
        self._admitted: dict[str, set[str]] = {}
        self._refused: dict[str, set[str]] = {}
        self._admitted_until = 0.0

    def process(
        self, arrivals: Sequence[Arrival], now: float, start_offsets: dict[int, int]
    ) -> BatchResult:
        """Absorb, plan and settle one batch. `start_offsets`: see `Outbox`."""
        return self.settle(self.absorb(arrivals, now, start_offsets), now)

    def absorb(
        self, arrivals: Sequence[Arrival], now: float, start_offsets: dict[int, int]
    ) -> Absorbing:
        """Phase 1, and the plan of what its claims add."""
        return self.plan(*self.store_arrivals(arrivals, now, start_offsets))

    def store_arrivals(
        self, arrivals: Sequence[Arrival], now: float, start_offsets: dict[int, int]
    ) -> tuple[Absorbed, str]:
        """Phase 1 alone (Redis's work): what it claimed, and the batch's token."""
        token = uuid.uuid4().hex[:16]
        return self.store.absorb(arrivals, now, token, start_offsets), token

    def plan(self, absorbed: Absorbed, token: str) -> Absorbing:
        """What phase 1's claims add (Python's work)."""
        examples: list[LabeledExample] = []
        shares: dict[str, Share] = {}
        scoring = self.scoring
        for request_id, claim in absorbed.claims.items():
            share = shares.get(claim.source)
            if share is None:
                share = shares[claim.source] = Share()
            example = plan_claim(request_id, claim.state, claim.fields, scoring, share)
            if example is not None:
                examples.append(example)
        # One outbox entry per source with claims: see lua/absorb.lua.
        return Absorbing(absorbed, token, examples, shares, dict.fromkeys(shares, 1))

    def settle(self, absorbing: Absorbing, now: float) -> BatchResult:
        """Phase 2: add the counters of each source's share, once."""
        absorbed = absorbing.absorbed
        result = BatchResult(
            absorbed.statuses,
            counts=absorbed.counts,
            examples=absorbing.examples,
            outboxes=dict(absorbing.entries),
            expired_predictions=absorbed.expired_predictions,
            expired_outcomes=absorbed.expired_outcomes,
        )
        self._add(absorbing.token, absorbing.shares, result, now)
        return result

    def recover(self, outbox: Outbox, present: set[str], now: float) -> BatchResult:
        """Settle what a lost batch left in `outbox`: add the counters of each of its
        batches whose flag is still set (settle decides, atomically), and return the
        examples missing from the labeled topic (`present`: the request ids found
        there from `outbox.start_offsets`)."""
        wanted: dict[str, tuple[str, list[str]]] = {}
        for token, request_id, claimed in outbox.claims:
            names = [n for n in claimed if n != "e" or request_id not in present]
            if names:
                wanted[request_id] = (token, names)
        shares: dict[str, Share] = defaultdict(Share)
        examples = []
        states = self.store.states(list(wanted))
        for request_id, (token, names) in wanted.items():
            example = plan_claim(request_id, states[request_id], names, self.scoring, shares[token])
            if example is not None:
                examples.append(example)
        result = BatchResult([], examples=examples)
        for token in sorted({token for token, _, _ in outbox.claims}):
            self._add(token, {outbox.source: shares[token]}, result, now)
        return result

    def sweep(self, now: float, limit: int = 1000) -> Swept:
        return self.store.sweep(now, limit)

    def _counter_key(self, kind: str, a: str, b: str, now: float) -> str:
        """The bucket key of a quality ("q": version, variant) or agreement ("a":
        stable, candidate) counter at `now`, computed once per bucket."""
        bucket = int(now // BUCKET_SECONDS)
        key = self._keys.get((kind, a, b, bucket))
        if key is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            quality = self.store.quality
            counters = quality.counters(a, b) if kind == "q" else quality.agreement(a, b)
            key = self._keys[(kind, a, b, bucket)] = counters.bucket_key(now)
        return key

    def _segment_key(self, version: str, variant: str, segment: str, now: float) -> str:
        bucket = int(now // BUCKET_SECONDS)
        key = self._segment_keys.get((version, variant, segment, bucket))
        if key is None:
            if len(self._segment_keys) > 10_000:
                self._segment_keys.clear()
            counters = self.store.quality.segment(version, variant, segment)
            key = self._segment_keys[(version, variant, segment, bucket)] = counters.bucket_key(now)
        return key

    def _admit(self, shares: dict[str, Share], now: float) -> dict[str, dict[str, int]]:
        """Fold the groups of capped segments that Redis did not admit into `other`
        (in place); per source, how many scored predictions each segment folded.

        Admission only grows, so a batch planned again after a crash folds no value
        that was admitted the first time; the counters stay exactly once either way,
        since the whole share is added under one flag."""
        if not self._admitting:
            return {}
        if now >= self._admitted_until:
            self._admitted.clear()
            self._refused.clear()
            self._admitted_until = now + ADMITTED_FOR_SECONDS
        asked: dict[str, set[str]] = {}
        for share in shares.values():
            for _, _, segment, group in share.segments:
                if segment in self._admitting and group not in (SEGMENT_MISSING, SEGMENT_OTHER):
                    known = self._admitted.get(segment, ())
                    if group not in known and group not in self._refused.get(segment, ()):
                        asked.setdefault(segment, set()).add(group)
        if asked:
            admitted = self.store.admit(
                {
                    segment: (self._admitting[segment], sorted(groups))
                    for segment, groups in asked.items()
                }
            )
            for segment, groups in asked.items():
                yes = admitted.get(segment, set())
                self._admitted.setdefault(segment, set()).update(yes)
                self._refused.setdefault(segment, set()).update(groups - yes)
        folded: dict[str, dict[str, int]] = {}
        for source, share in shares.items():
            if not any(g in self._refused.get(s, ()) for _, _, s, g in share.segments):
                continue
            sums: SegmentSums = {}
            for (version, variant, segment, group), fields in share.segments.items():
                if group in self._refused.get(segment, ()):
                    counts = folded.setdefault(source, {})
                    counts[segment] = counts.get(segment, 0) + int(fields.get("count", 0))
                    group = SEGMENT_OTHER
                into = sums.setdefault((version, variant, segment, group), {})
                for name, value in fields.items():
                    into[name] = into.get(name, 0.0) + value
            share.segments = sums
        return folded

    def _add(self, token: str, shares: dict[str, Share], result: BatchResult, now: float) -> None:
        folded = self._admit(shares, now)
        increments: Increments = {}
        for source, share in shares.items():
            adds = increments[self.store.flag_key(source, token)] = []
            for (version, variant), sums in share.quality.items():
                key = self._counter_key("q", version, variant, now)
                adds += [(key, name, value) for name, value in sums.items()]
            for (stable, candidate), (compared, agreed) in share.agreement.items():
                key = self._counter_key("a", stable, candidate, now)
                adds += [(key, "compared", compared), (key, "agreed", agreed)]
            for (version, variant, segment, group), sums in share.segments.items():
                key = self._segment_key(version, variant, segment, now)
                adds += [(key, segment_field(group, name), value) for name, value in sums.items()]
        added = self.store.settle(increments)
        for source, share in shares.items():
            if added.get(self.store.flag_key(source, token)):
                result.merge(
                    BatchResult(
                        [],
                        quality=share.quality,
                        agreement=share.agreement,
                        segments=share.segments,
                        folded=folded.get(source, {}),
                    )
                )
