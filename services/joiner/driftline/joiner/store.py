"""The join state in Redis, and the three scripts that change it.

    driftline:<ns>:<model>:joiner:req:<request id>   one hash per request (see lua/prelude.lua)
    driftline:<ns>:<model>:joiner:pending            zset: request ids by end of window
    driftline:<ns>:<model>:joiner:outbox:<source>    list: examples owed to the labeled topic
    driftline:<ns>:<model>:joiner:outbox:<source>:from   where in that topic to look for them

The live quality and agreement counters the scripts add to are the shared ones of
`driftline.common.state.QualityStore`, which the rollout controller reads.

Each phase of a batch is one Lua script: one round trip for thousands of records
(packed as one msgpack argument, answered with one msgpack reply), and atomic, so
a marker and the counters it guards are one step. The scripts build
key names from the prefixes they are given, which a single Redis (or a primary with
replicas) allows; Redis Cluster is not supported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec

from driftline.common.state import RETENTION_SECONDS, QualityStore, model_prefix

ARRIVAL_NEW, ARRIVAL_DUPLICATE, ARRIVAL_LATE = 0, 1, 2


def _script(name: str) -> str:
    lua = resources.files("driftline.joiner") / "lua"
    prelude = (lua / "prelude.lua").read_text(encoding="utf-8")
    return prelude + (lua / f"{name}.lua").read_text(encoding="utf-8")


_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def _num(value: float) -> str:
    """A float as Lua reads it back exactly (repr round-trips a double)."""
    return repr(float(value))


@dataclass(frozen=True)
class Arrival:
    """One prediction or outcome to store: `field` is `p:<variant>` or `o`."""

    request_id: str
    field: str
    payload: bytes


@dataclass
class Absorbed:
    statuses: list[int]
    """One per arrival: ARRIVAL_NEW, ARRIVAL_DUPLICATE or ARRIVAL_LATE."""
    expired_predictions: int
    expired_outcomes: int
    states: dict[str, dict[str, str]]
    """The whole hash of each request that has work to settle."""


@dataclass
class SettleBatch:
    """What phase 2 should mark and count; `items` keep their order in the reply."""

    fields: tuple[str, ...]
    quality_keys: list[str] = field(default_factory=list)
    agreement_keys: list[str] = field(default_factory=list)
    items: list[tuple[Any, ...]] = field(default_factory=list)
    _quality_index: dict[str, int] = field(default_factory=dict)
    _agreement_index: dict[str, int] = field(default_factory=dict)

    def score(self, request_id: str, variant: str, key: str, values: list[float]) -> None:
        index = self._quality_index.get(key)
        if index is None:
            self.quality_keys.append(key)
            index = self._quality_index[key] = len(self.quality_keys)
        self.items.append(("q", request_id, variant, index, values))

    def agree(self, request_id: str, key: str, agreed: bool) -> None:
        index = self._agreement_index.get(key)
        if index is None:
            self.agreement_keys.append(key)
            index = self._agreement_index[key] = len(self.agreement_keys)
        self.items.append(("a", request_id, index, 1 if agreed else 0))

    def emit(self, request_id: str, variant: str, outbox_key: str) -> None:
        self.items.append(("e", request_id, variant, outbox_key))


@dataclass(frozen=True)
class Swept:
    expired_predictions: int
    expired_outcomes: int
    looked_at: int
    pending: int


@dataclass(frozen=True)
class Outbox:
    """Examples a crashed (or failed) batch owed the labeled topic."""

    source: str
    request_ids: list[str]
    start_offsets: dict[int, int]
    """Per labeled partition, an offset at or before the first of those examples."""


class JoinStore:
    """Typed calls to the join scripts for one model."""

    def __init__(
        self, client: Any, namespace: str, name: str, *, window: float, grace: float
    ) -> None:
        self.client = client
        self.window = window
        self.grace = grace
        base = f"{model_prefix(namespace, name)}:joiner"
        self.state_prefix = f"{base}:req:"
        self.pending_key = f"{base}:pending"
        self.outbox_prefix = f"{base}:outbox:"
        self.quality = QualityStore(namespace, name)
        # The scripts forget a request after window + grace. Its key lives one more
        # grace period (and a minute for clock skew between replicas), so that a
        # batch that crashed before settling, replayed that much later, still finds
        # the joins it owes.
        self.ttl = math.ceil(window + 2 * grace) + 60
        self._absorb = client.register_script(_script("absorb"))
        self._settle = client.register_script(_script("settle"))
        self._sweep = client.register_script(_script("sweep"))

    def state_key(self, request_id: str) -> str:
        return self.state_prefix + request_id

    def outbox_key(self, source: str) -> str:
        return self.outbox_prefix + source

    def absorb(self, arrivals: Sequence[Arrival], now: float) -> Absorbed:
        batch = _pack([[a.request_id, a.field, a.payload.decode()] for a in arrivals])
        reply = self._absorb(
            args=[
                _num(now),
                _num(now + self.window),
                _num(self.grace),
                self.ttl,
                self.state_prefix,
                self.pending_key,
                batch,
            ]
        )
        statuses, (expired_p, expired_o), states = _unpack(reply)
        # An empty Lua table comes back as an empty list, not an empty map.
        return Absorbed(statuses, expired_p, expired_o, states or {})

    def settle(self, batch: SettleBatch, start_offsets: dict[int, int]) -> list[bool]:
        if not batch.items:
            return []
        packed = _pack([batch.fields, batch.quality_keys, batch.agreement_keys, batch.items])
        flags = self._settle(
            args=[
                self.state_prefix,
                self.pending_key,
                RETENTION_SECONDS,
                self.ttl,
                json.dumps({str(p): o for p, o in start_offsets.items()}),
                packed,
            ]
        )
        return [flag == 49 for flag in flags]  # b"1"

    def sweep(self, now: float, limit: int = 1000) -> Swept:
        expired_p, expired_o, looked_at, pending = self._sweep(
            args=[_num(now), self.state_prefix, self.pending_key, limit]
        )
        return Swept(int(expired_p), int(expired_o), int(looked_at), int(pending))

    def state(self, request_id: str) -> dict[str, str]:
        raw = self.client.hgetall(self.state_key(request_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def read_outbox(self, source: str) -> Outbox | None:
        key = self.outbox_key(source)
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(key, 0, -1)
        pipe.get(f"{key}:from")
        ids, start = pipe.execute()
        if not ids:
            return None
        offsets = {int(p): int(o) for p, o in json.loads(start).items()} if start else {}
        return Outbox(source, [i.decode() for i in ids], offsets)

    def clear_outboxes(self, sources: Sequence[str]) -> None:
        keys = [self.outbox_key(s) for s in sources]
        if keys:
            self.client.delete(*keys, *(f"{k}:from" for k in keys))
