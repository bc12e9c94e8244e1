"""The rollout's Redis side: its durable record, operator commands, and the metrics it reads.

    driftline:<ns>:<model>:rollout           `Record`: state, actions not yet carried out,
                                             last routing revision written (JSON)
    driftline:<ns>:<model>:rollout:command   one pending `Command` (JSON), taken once

The record lets a restarted driver resume mid-rollout, and lets `driftline status`
and the operator show the stage without asking the driver. Commands come from a
person (`driftline rollout approve`, an annotation on the resource): whoever writes
the key, the driver takes it on its next tick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from driftline.api.events import DriftEvent, EventError, decode
from driftline.common.redis_state import (
    LATENCY_BUCKETS_MS,
    AccuracyEstimate,
    EstimateStore,
    QualityStore,
    ServingStore,
    WindowedCounters,
    drift_key,
    rollout_command_key,
    rollout_key,
    split_segment_fields,
)
from driftline.rollout.actions import Action
from driftline.rollout.evidence import Evidence, SegmentEvidence, VersionCounters, segment_key
from driftline.rollout.guard import GuardEvidence
from driftline.rollout.rollout_state import RolloutState
from driftline.rollout.snapshot import Command, DriftSignal

log = logging.getLogger(__name__)

CANDIDATE_VARIANTS = ("candidate", "shadow")
"""A candidate is served in canary (`candidate`) and scored beside stable (`shadow`)."""
STABLE_VARIANTS = ("stable", "shadow")
"""The stable version serves (`stable`), and may be scored in shadow when the candidate
serves everything."""


class Record(msgspec.Struct, frozen=True, kw_only=True):
    state: RolloutState
    pending: tuple[Action, ...] = ()
    revision: int = 0
    """The last routing table revision this driver wrote (revisions only move forward)."""
    saved_at: float = 0.0


_record_decoder = msgspec.json.Decoder(Record)
_command_decoder = msgspec.json.Decoder(Command)


class RolloutStore:
    def __init__(self, namespace: str, name: str) -> None:
        self.key = rollout_key(namespace, name)
        self.command_key = rollout_command_key(namespace, name)

    def load(self, client: Any) -> Record | None:
        data = client.get(self.key)
        if not data:
            return None
        try:
            return _record_decoder.decode(data)
        except msgspec.DecodeError as exc:
            # An unreadable record must not stop the controller; it starts at rest and
            # rebuilds from the aliases (a running rollout starts again from its first stage).
            log.error("ignoring unreadable rollout record at %s: %s", self.key, exc)
            return None

    def save(self, client: Any, record: Record) -> bytes:
        data = msgspec.json.encode(record)
        client.set(self.key, data)
        return data

    def take_command(self, client: Any) -> Command | None:
        """The pending command, removed so that it acts once."""
        pipe = client.pipeline(transaction=True)
        pipe.get(self.command_key)
        pipe.delete(self.command_key)
        data, _ = pipe.execute()
        if not data:
            return None
        try:
            return _command_decoder.decode(data)
        except msgspec.DecodeError as exc:
            log.warning("ignoring malformed rollout command %r: %s", data[:200], exc)
            return None

    def send_command(self, client: Any, command: Command) -> None:
        client.set(self.command_key, msgspec.json.encode(command))


def read_rollout(client: Any, namespace: str, name: str) -> RolloutState | None:
    """The model's rollout state as last saved (for `driftline status` and the operator)."""
    record = RolloutStore(namespace, name).load(client)
    return record.state if record else None


SETTLE_SECONDS = 30.0
"""A time bucket stops changing this long after it ends: writers add to the bucket of
their own clock, and a pipeline may run a moment after it was built. Allows for that
and for clock skew between hosts."""


@dataclass
class _Settled:
    """Sums of one counter over the buckets `first`..`through`, which no longer change."""

    first: int
    through: int
    totals: dict[str, float]


class MetricsSource:
    """Reads the rollout's evidence and the latest drift event from Redis.

    Counters are summed from the rollout's first bucket, so the sums of buckets that
    have settled are kept between ticks and only the last few buckets are read again:
    a tick costs the same an hour into a rollout as a minute into it. A write that
    lands in a settled bucket later (a writer stamping an old time) is missed until
    the driver restarts: evidence can only be undercounted, never invented.
    """

    def __init__(self, namespace: str, name: str) -> None:
        self.quality = QualityStore(namespace, name)
        self.serving = ServingStore(namespace, name)
        self.drift_key = drift_key(namespace, name)
        self.estimate_store = EstimateStore(namespace, name)
        self._settled: dict[str, _Settled] = {}
        self._rollout_since: float | None = None

    def evidence(
        self,
        client: Any,
        *,
        stable: str | None,
        candidate: str,
        since: float,
        now: float,
        segments: tuple[str, ...] = (),
    ) -> Evidence:
        """Counters summed from the time bucket holding `since` up to `now`; per value
        of each of `segments` too (the worst-segment gate)."""
        if since != self._rollout_since:
            self._settled.clear()  # another rollout: forget the last one's sums
            self._rollout_since = since
        cand = self._version(client, candidate, CANDIDATE_VARIANTS, since, now, serving=True)
        stab = (
            self._version(client, stable, STABLE_VARIANTS, since, now, serving=False)
            if stable is not None
            else VersionCounters()
        )
        compared, agreed = 0, 0
        if stable is not None:
            f = self._since(client, self.quality.agreement(stable, candidate), since, now)
            compared, agreed = int(f.get("compared", 0)), int(f.get("agreed", 0))
        by_value: dict[str, SegmentEvidence] = {}
        for segment in segments:
            mine = self._segment(client, candidate, CANDIDATE_VARIANTS, segment, since, now)
            theirs = (
                self._segment(client, stable, STABLE_VARIANTS, segment, since, now)
                if stable is not None
                else {}
            )
            for value in sorted(mine.keys() | theirs.keys()):
                by_value[segment_key(segment, value)] = SegmentEvidence(
                    candidate=mine.get(value, VersionCounters()),
                    stable=theirs.get(value, VersionCounters()),
                )
        return Evidence(
            candidate=cand, stable=stab, compared=compared, agreed=agreed, segments=by_value
        )

    def guard(
        self,
        client: Any,
        *,
        champion: str,
        previous: str,
        baseline: str | None,
        since: float,
        now: float,
    ) -> GuardEvidence:
        """Labeled counters since a promotion: the new champion as served (`stable`),
        the previous one scored in shadow, the baseline scored as `baseline`."""
        if since != self._rollout_since:
            self._settled.clear()
            self._rollout_since = since
        return GuardEvidence(
            champion=self._version(client, champion, ("stable",), since, now, serving=False),
            previous=self._version(client, previous, ("shadow",), since, now, serving=False),
            baseline=(
                self._version(client, baseline, ("baseline",), since, now, serving=False)
                if baseline is not None and baseline != champion
                else None
            ),
        )

    def _segment(
        self,
        client: Any,
        version: str,
        variants: tuple[str, ...],
        segment: str,
        since: float,
        now: float,
    ) -> dict[str, VersionCounters]:
        """Labeled quality of `version` per value of `segment`, over its variants."""
        totals: dict[str, VersionCounters] = {}
        for variant in variants:
            f = self._since(client, self.quality.segment(version, variant, segment), since, now)
            for value, fields in split_segment_fields(f).items():
                totals[value] = totals.get(value, VersionCounters()).plus(
                    VersionCounters(
                        labeled=int(fields.get("count", 0)),
                        correct=fields.get("correct", 0.0),
                        abs_error=fields.get("abs_error", 0.0),
                    )
                )
        return totals

    def _version(
        self,
        client: Any,
        version: str,
        variants: tuple[str, ...],
        since: float,
        now: float,
        *,
        serving: bool,
    ) -> VersionCounters:
        total = VersionCounters()
        for variant in variants:
            f = self._since(client, self.quality.counters(version, variant), since, now)
            if serving:
                f |= self._since(client, self.serving.counters(version, variant), since, now)
            total = total.plus(
                VersionCounters(
                    labeled=int(f.get("count", 0)),
                    correct=f.get("correct", 0.0),
                    abs_error=f.get("abs_error", 0.0),
                    requests=int(f.get("requests", 0)),
                    errors=int(f.get("errors", 0)),
                    latency=tuple(int(f.get(f"le_{i}", 0)) for i in range(len(LATENCY_BUCKETS_MS)))
                    if serving
                    else (),
                )
            )
        return total

    def _since(
        self, client: Any, counters: WindowedCounters, since: float, now: float
    ) -> dict[str, float]:
        """Sums of `counters` over the buckets from the one holding `since` to `now`'s."""
        width = counters.bucket_seconds
        first, last = int(since // width), int(now // width)
        settled_through = min(last, int((now - SETTLE_SECONDS) // width) - 1)
        kept = self._settled.get(counters.key)
        if kept is None or kept.first != first:
            kept = _Settled(first, first - 1, {})
        if settled_through > kept.through:
            newly = counters.read(
                client,
                _span(width, kept.through + 1, settled_through),
                _middle(width, settled_through),
            )
            kept = _Settled(first, settled_through, _add(kept.totals, newly))
        self._settled[counters.key] = kept
        if last <= kept.through:
            return dict(kept.totals)
        recent = counters.read(client, _span(width, kept.through + 1, last), _middle(width, last))
        return _add(kept.totals, recent)

    def estimates(self, client: Any) -> dict[str, AccuracyEstimate]:
        """The drift monitor's accuracy estimated from confidence, per version."""
        return self.estimate_store.read(client)

    def drift(self, client: Any) -> DriftSignal | None:
        data = client.get(self.drift_key)
        if not data:
            return None
        try:
            event = decode(data, DriftEvent)
        except EventError as exc:
            log.warning("ignoring unreadable drift event at %s: %s", self.drift_key, exc.reason)
            return None
        return DriftSignal(
            event_id=event.event_id,
            detected_at=event.detected_at,
            kind=event.kind,
            model_version=event.model_version,
        )


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in a.keys() | b.keys()}


def _middle(width: int, bucket: int) -> float:
    return bucket * width + width / 2


def _span(width: int, first: int, last: int) -> float:
    """The window that, read at a time within bucket `last`, starts in bucket `first`.

    Measured between bucket middles, so float rounding of `now - window` never slips
    into a neighbouring bucket (`WindowedCounters.read` floors both ends).
    """
    return max(0.0, _middle(width, last) - _middle(width, first))
