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
from typing import Any

import msgspec

from driftline.api.events import DriftEvent, EventError, decode
from driftline.common.state import (
    LATENCY_BUCKETS_MS,
    QualityStore,
    ServingStore,
    WindowedCounters,
    drift_key,
    rollout_command_key,
    rollout_key,
)
from driftline.rollout.actions import Action
from driftline.rollout.evidence import Evidence, VersionCounters
from driftline.rollout.snapshot import Command, DriftSignal
from driftline.rollout.state import RolloutState

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


class MetricsSource:
    """Reads the rollout's evidence and the latest drift event from Redis."""

    def __init__(self, namespace: str, name: str) -> None:
        self.quality = QualityStore(namespace, name)
        self.serving = ServingStore(namespace, name)
        self.drift_key = drift_key(namespace, name)

    def evidence(
        self, client: Any, *, stable: str | None, candidate: str, since: float, now: float
    ) -> Evidence:
        """Counters summed from the time bucket holding `since` up to `now`."""
        cand = self._version(client, candidate, CANDIDATE_VARIANTS, since, now, serving=True)
        stab = (
            self._version(client, stable, STABLE_VARIANTS, since, now, serving=False)
            if stable is not None
            else VersionCounters()
        )
        compared, agreed = 0, 0
        if stable is not None:
            agreement = self.quality.agreement(stable, candidate)
            f = agreement.read(client, _window(agreement, since, now), now)
            compared, agreed = int(f.get("compared", 0)), int(f.get("agreed", 0))
        return Evidence(candidate=cand, stable=stab, compared=compared, agreed=agreed)

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
            q = self.quality.counters(version, variant)
            f = q.read(client, _window(q, since, now), now)
            if serving:
                s = self.serving.counters(version, variant)
                f = {**f, **s.read(client, _window(s, since, now), now)}
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


def _window(counters: WindowedCounters, since: float, now: float) -> float:
    """The window whose first bucket is the one holding `since`.

    Aimed at the middle of that bucket, so float rounding of `now - window` can
    never slip into the bucket before or after from one tick to the next.
    """
    width = counters.bucket_seconds
    middle = (since // width) * width + width / 2
    return max(0.0, now - middle)
