"""The Python cost of Feast features per request, without Redis: CPU per request of
`SourcedFeatures.fill` for three `source.feast` features of one view (as in
feast_throughput), the store stood in for by a client that answers at once.

What it measures is the lookup's own Python (the turn's batch, entity keys, the
script answer split and decoded, the values written into the rows and the logged
values), not the round trip to Redis. Requests come `--per-turn` at a time (one
event-loop turn), each one row with a random user of 1,000.

    python -m benchmarks.features.feast_fill [--requests 20000] [--per-turn 1 8 32]

Writes benchmarks/results/feast-fill.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import struct
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from driftline.api import parse_dynamic_model
from driftline.common.feast_online import FeastOnlineReader, JoinKey, feature_field
from driftline.inference.contract import FeatureContract, Rows
from driftline.inference.sources import SourcedFeatures
from driftline_testing.models import model_document

RESULTS = Path(__file__).resolve().parents[1] / "results"
USERS = 1000
FROM_REQUEST = ("x1", "x2", "x3")
FROM_FEAST = ("txn_count", "ratio", "amount")


class AnsweringStore:
    """Feast's Redis as a dict of hashes; HMGET, the packed HMGETs and the reader's
    script answer at once."""

    def __init__(self) -> None:
        keys = FeastOnlineReader(self, "p", [JoinKey("user_id", "int64")], ["user_stats:f"])
        at = int(time.time()) - 60
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        for user in range(1, USERS + 1):
            key = keys.redis_key({"user_id": user})
            assert key is not None
            values = [b"\x20" + bytes([user % 50]), double((user % 7) / 7), double(user * 1.5)]
            self.hashes[key] = {
                **{
                    feature_field("user_stats", n): v
                    for n, v in zip(FROM_FEAST, values, strict=True)
                },
                b"_ts:user_stats": b"\x08" + varint(at),
            }

    async def execute_command(self, name: str, key: bytes, *fields: bytes) -> list[Any]:
        return [self.hashes.get(key, {}).get(f) for f in fields]

    @property
    def connection_pool(self) -> AnsweringConnection:
        return AnsweringConnection(self)

    def register_script(self, text: str) -> Any:
        async def script(keys: list[bytes], args: list[bytes]) -> bytes:
            out = []
            for key in keys:
                stored = self.hashes.get(key, {})
                for field in args:
                    v = stored.get(field)
                    out.append(b"\xff" if v is None else bytes([len(v)]) + v)
            return b"".join(out)

        return script


class AnsweringConnection:
    """The store's pool and its one connection: the reader's packed HMGETs, answered."""

    def __init__(self, store: AnsweringStore) -> None:
        self.store = store
        self.replies: list[list[bytes | None]] = []

    async def get_connection(self) -> AnsweringConnection:
        return self

    async def release(self, connection: Any) -> None:
        pass

    async def disconnect(self, nowait: bool = False) -> None:
        pass

    async def send_packed_command(self, command: list[bytes], check_health: bool) -> None:
        data = b"".join(command)
        while data:  # RESP arrays of bulk strings: *N, then N times $len and the bytes
            head, data = data.split(b"\r\n", 1)
            args = []
            for _ in range(int(head[1:])):
                size, data = data.split(b"\r\n", 1)
                args.append(data[: int(size[1:])])
                data = data[int(size[1:]) + 2 :]
            stored = self.store.hashes.get(args[1], {})
            self.replies.append([stored.get(f) for f in args[2:]])

    async def read_response(self) -> list[bytes | None]:
        return self.replies.pop(0)


def double(value: float) -> bytes:
    return b"\x29" + struct.pack("<d", value)


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def sourced() -> SourcedFeatures:
    doc = model_document("m", numeric=(*FROM_REQUEST, *FROM_FEAST))
    for feature in doc["spec"]["features"]:
        if feature["name"] in FROM_FEAST:
            key = [{"joinKey": "user_id", "type": "int64"}]
            feature["source"] = {
                "feast": {"project": "p", "featureView": "user_stats", "name": feature["name"],
                          "entityKeys": key}
            }  # fmt: skip
    spec = parse_dynamic_model(doc).spec
    sources = SourcedFeatures.for_model(spec, FeatureContract(spec), "bench")
    assert sources is not None and sources.feast is not None
    sources.feast.connect(AnsweringStore(), 1.0)
    return sources


async def cpu_per_request(sources: SourcedFeatures, requests: int, per_turn: int) -> float:
    row = (0.1, 0.2, 0.3, 0.5, 0.5, 0.5)

    async def one() -> None:
        rows = Rows(1, np.array([row], dtype=np.float32), None, [row])
        await sources.fill(rows, [str(random.randint(1, USERS))])

    turns = max(1, requests // per_turn)
    for _ in range(max(1, turns // 10)):  # warm up
        await asyncio.gather(*(one() for _ in range(per_turn)))
    start = time.process_time()
    for _ in range(turns):
        await asyncio.gather(*(one() for _ in range(per_turn)))
    return (time.process_time() - start) / (turns * per_turn) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--per-turn", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (best kept)")
    args = parser.parse_args(argv)
    random.seed(7)
    load_before = os.getloadavg()
    lines = []
    for per_turn in args.per_turn:
        best = min(
            asyncio.run(cpu_per_request(sourced(), args.requests, per_turn))
            for _ in range(args.repeat)
        )
        lines.append(f"| {per_turn} | {best:.1f} |")
        print(lines[-1], flush=True)
    load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    text = "\n".join(
        [
            "# The Python cost of Feast features per request (no Redis)",
            "",
            f"{os.cpu_count()} cores, shared; load average {load[:3]} before and {load[3:]} "
            f"after, {datetime.now(UTC).isoformat(timespec='seconds')}. "
            f"{args.requests} one-row requests per size, best of {args.repeat} runs; CPU "
            "time of the process (the stand-in store's own work included).",
            "",
            "| requests per event-loop turn | CPU per request (us) |",
            "|---:|---:|",
            *lines,
            "",
            "Command: `python -m benchmarks.features.feast_fill`.",
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feast-fill.md").write_text(text)


if __name__ == "__main__":
    main()
