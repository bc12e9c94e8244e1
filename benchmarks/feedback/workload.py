"""The records one benchmark run joins, and the raw Redis commands a join costs."""

from __future__ import annotations

import random
from dataclasses import dataclass

from driftline.api.events import Outcome, Prediction, encode

MODEL = "bench"
TS = 1_800_000_000.0


@dataclass(frozen=True)
class Request:
    request_id: str
    prediction: bytes
    outcome: bytes


def requests(n: int, seed: int = 7) -> list[Request]:
    """n requests as inference logs them: three features, class scores, one outcome."""
    rng = random.Random(seed)
    made = []
    for i in range(n):
        rid = f"{i:08x}-{rng.getrandbits(64):016x}"
        output = float(rng.random() < 0.5)
        p = Prediction(
            request_id=rid,
            model=MODEL,
            model_version="7",
            variant="stable",
            features={"x1": rng.uniform(0, 10), "x2": rng.uniform(0, 10), "x3": rng.uniform(0, 10)},
            output=output,
            ts=TS + i * 1e-4,
            entity_id=f"user-{rng.randrange(100_000)}",
            scores=[1 - output * 0.8, 0.2 + output * 0.6],
        )
        o = Outcome(request_id=rid, label=float(rng.random() < 0.5), ts=TS + i * 1e-4 + 30)
        made.append(Request(rid, encode(p), encode(o)))
    return made


def _resp(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def join_commands(reqs: list[Request], prefix: str, pending: str, outbox: str) -> bytes:
    """The Redis operations one join needs, each as its own command, as a raw RESP
    stream for `redis-cli --pipe`: the prediction arrives (read the request, store
    it with its window, wait in `pending`), its outcome arrives (read, store with
    the claims), the claims go to the outbox and the request stops waiting. The
    counters, added once per batch and counter, are left out."""
    deadline = str(TS + 3600)
    out = []
    for r in reqs:
        key = prefix + r.request_id
        out += [
            _resp("HGETALL", key),
            _resp("HSET", key, "t", deadline, "p:stable", r.prediction),
            _resp("EXPIRE", key, 4000),
            _resp("ZADD", pending, deadline, r.request_id),
            _resp("HGETALL", key),
            _resp("HSET", key, "o", r.outcome),
            _resp("HSET", key, "s:stable", "1", "e", "stable"),
            _resp("RPUSH", outbox, f"token\t{r.request_id}\ts:stable,e"),
            _resp("ZREM", pending, r.request_id),
        ]
    return b"".join(out)


COMMANDS_PER_JOIN = 9
