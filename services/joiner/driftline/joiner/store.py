"""The join state in Redis, and the scripts that change it.

    driftline:<ns>:<model>:joiner:req:<request id>    one msgpack map per request (lua/prelude.lua)
    driftline:<ns>:<model>:joiner:pending             zset: request ids by end of window
    driftline:<ns>:<model>:joiner:outbox:<source>     list: one entry per batch, naming its
                                                      claims not yet durable
    driftline:<ns>:<model>:joiner:outbox:<source>:from      where their examples may be
    driftline:<ns>:<model>:joiner:outbox:<source>:q:<batch> set until the batch's counters
                                                              are added

The live quality, segment and agreement counters are the shared ones of
`driftline.common.redis_state.QualityStore`, which the rollout controller reads;
so is the set of each capped segment's admitted values (lua/admit.lua).

Each phase of a batch is one Lua script: one round trip for thousands of records
(packed as one msgpack argument, answered with a few msgpack replies), and atomic.
Redis runs scripts on its only thread, so what a script spends per record bounds
every joiner; lua/prelude.lua says how they keep that small.
The scripts build key names from the prefixes they are given, which a single Redis
(or a primary with replicas) allows; Redis Cluster is not supported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain
from typing import Any, NamedTuple, get_args

import msgspec

from driftline.api.events import Variant
from driftline.common.redis_state import RETENTION_SECONDS, QualityStore, model_prefix

ARRIVAL_NEW, ARRIVAL_DUPLICATE, ARRIVAL_LATE = 0, 1, 2

_DIGITS = bytes.maketrans(b"012", b"\x00\x01\x02")
_SIDES = {"p": "prediction", "o": "outcome"}
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def _script(name: str) -> str:
    lua = resources.files("driftline.joiner") / "lua"
    # The variants a prediction may carry, from the event contract (which intake
    # enforces): the scripts look up each one instead of scanning a state's fields.
    variants = ", ".join(f"'{v}'" for v in get_args(Variant))
    prelude = (lua / "prelude.lua").read_text(encoding="utf-8")
    script = (lua / f"{name}.lua").read_text(encoding="utf-8")
    return f"local VARIANTS = {{ {variants} }}\n{prelude}{script}"


def command_packer() -> Any:
    """How the joiner's Redis client packs its commands (its `command_packer`).

    A batch goes to a script as one argument of hundreds of kilobytes. hiredis's
    packer, redis-py's default where hiredis is installed, copies it into the
    command's buffer, slowly (about 0.5 ms of CPU for 400 kB); redis-py's own packer
    sends a large argument as it is (0.07 ms)."""
    from redis.connection import Encoder, PythonRespSerializer  # type: ignore[attr-defined]

    return PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)


def _num(value: float) -> str:
    """A float as Lua reads it back exactly (repr round-trips a double)."""
    return repr(float(value))


class Arrival(NamedTuple):
    """One prediction or outcome to store (a tuple: batches hold thousands)."""

    request_id: str
    field: str
    """`p:<variant>` for a prediction, `o` for an outcome."""
    payload: str
    """The record's JSON, as it was validated (a str: Redis's msgpack reads no
    binary type)."""
    source: str
    """Where it came from (the worker: its topic partition); one outbox per source."""


State = dict[str, Any]
"""A request's state as lua/prelude.lua lays it out: field -> its record's JSON, a
claim's value, or (`t`) the end of its window, a number."""


class Claim(NamedTuple):
    """Work phase 1 claimed for one request: its state, the claimed fields
    (`s:<variant>`, `e`, `a`) and the source whose outbox names them."""

    state: State
    fields: list[str]
    source: str


@dataclass
class Absorbed:
    statuses: list[int]
    """One per arrival: ARRIVAL_NEW, ARRIVAL_DUPLICATE or ARRIVAL_LATE."""
    counts: dict[tuple[str, int], int]
    """Arrivals by side ("prediction", "outcome") and status."""
    expired_predictions: int
    expired_outcomes: int
    claims: dict[str, Claim]


@dataclass(frozen=True)
class Swept:
    expired_predictions: int
    expired_outcomes: int
    looked_at: int
    pending: int


@dataclass(frozen=True)
class Outbox:
    """Claims a crashed (or failed) batch left: (batch token, request id, fields)."""

    source: str
    claims: list[tuple[str, str, list[str]]]
    start_offsets: dict[int, int]
    """Per labeled partition, an offset at or before the first of its examples."""


# (counter key, field, value) to add, per source flag key
Increments = dict[str, list[tuple[str, str, float]]]


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
        # grace period (and a minute for clock skew between replicas), so that an
        # outbox left by a crash is still settled from it that much later.
        self.ttl = math.ceil(window + 2 * grace) + 60
        self._absorb = client.register_script(_script("absorb"))
        self._settle = client.register_script(_script("settle"))
        self._sweep = client.register_script(_script("sweep"))
        self._trim = client.register_script(_script("trim"))
        self._admit = client.register_script(_script("admit"))

    def state_key(self, request_id: str) -> str:
        return self.state_prefix + request_id

    def outbox_key(self, source: str) -> str:
        return self.outbox_prefix + source

    def flag_key(self, source: str, token: str) -> str:
        return f"{self.outbox_prefix}{source}:q:{token}"

    def absorb(
        self, arrivals: Sequence[Arrival], now: float, token: str, start_offsets: dict[int, int]
    ) -> Absorbed:
        meta, blob, *outboxes = self._absorb(
            args=[
                _num(now),
                _num(now + self.window),
                _num(self.grace),
                self.ttl,
                self.state_prefix,
                self.pending_key,
                self.outbox_prefix,
                token,
                json.dumps({str(p): o for p, o in start_offsets.items()}),
                _pack(list(chain.from_iterable(arrivals))),
            ]
        )
        statuses, counts, expired_p, expired_o = _unpack(meta)
        # The claimed states, in the order the outbox entries name their requests:
        # (source, [token, request id, fields, request id, fields, ...]) per source.
        claimed: list[State] = _unpack(blob)
        claims: dict[str, Claim] = {}
        at = 0
        for j in range(0, len(outboxes), 2):
            source = outboxes[j].decode()
            entry = _unpack(outboxes[j + 1])
            for i in range(1, len(entry), 2):
                claims[entry[i]] = Claim(claimed[at], entry[i + 1].split(","), source)
                at += 1
        return Absorbed(
            list(statuses.encode().translate(_DIGITS)),
            {(_SIDES[k[0]], int(k[1])): n for k, n in counts.items()} if counts else {},
            expired_p,
            expired_o,
            claims,
        )

    def settle(self, increments: Increments) -> dict[str, bool]:
        """Add each flag's increments if the flag is still set; which were added now."""
        if not increments:
            return {}
        flags = list(increments)
        done = self._settle(args=[RETENTION_SECONDS, _pack([[f, increments[f]] for f in flags])])
        return {flag: added == 49 for flag, added in zip(flags, done, strict=True)}  # b"1"

    def admit(self, asks: dict[str, tuple[int, list[str]]]) -> dict[str, set[str]]:
        """Per segment: which of the values asked are kept apart (cap, values asked)."""
        if not asks:
            return {}
        segments = list(asks)
        packed = _pack(
            [[self.quality.segment_values_key(s), asks[s][0], asks[s][1]] for s in segments]
        )
        answers = _unpack(self._admit(args=[RETENTION_SECONDS, packed]))
        # cmsgpack packs an empty Lua table as a map
        return {s: set(a or ()) for s, a in zip(segments, answers, strict=True)}

    def sweep(self, now: float, limit: int = 1000) -> Swept:
        expired_p, expired_o, looked_at, pending = self._sweep(
            args=[_num(now), self.state_prefix, self.pending_key, limit]
        )
        return Swept(int(expired_p), int(expired_o), int(looked_at), int(pending))

    def states(self, request_ids: Sequence[str]) -> dict[str, State]:
        """The current state of each request (empty when it is gone)."""
        if not request_ids:
            return {}
        blobs = self.client.mget([self.state_key(r) for r in request_ids])
        return {r: _unpack(b) if b else {} for r, b in zip(request_ids, blobs, strict=True)}

    def read_outbox(self, source: str) -> Outbox | None:
        key = self.outbox_key(source)
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(key, 0, -1)
        pipe.get(f"{key}:from")
        entries, start = pipe.execute()
        if not entries:
            return None
        claims = []
        for entry in entries:
            token, *named = _unpack(entry)
            for i in range(0, len(named), 2):
                claims.append((token, named[i], named[i + 1].split(",")))
        offsets = {int(p): int(o) for p, o in json.loads(start).items()} if start else {}
        return Outbox(source, claims, offsets)

    def trim_outboxes(self, entries: dict[str, int]) -> None:
        """Drop the first `entries[source]` entries of each outbox: a batch's claims,
        once durable (the next batch may have appended its own behind them)."""
        if entries:
            args: list[Any] = [self.outbox_prefix]
            for source, count in entries.items():
                args += (source, count)
            self._trim(args=args)

    def clear_outboxes(self, sources: Sequence[str]) -> None:
        keys = [self.outbox_key(s) for s in sources]
        if keys:
            self.client.delete(*keys, *(f"{k}:from" for k in keys))
