"""What reading features from Feast's Redis online store costs Driftline, per batch.

Real Feast (the venv of tests/rig/feast, `make rig`) materializes one feature view
of 6 features (int64, int32, float32, float64, string, bool) for 1,000 users into
a real Redis on loopback. Then, at batch sizes 1 and 64, side by side in rounds
(so that the machine's load hits every contender alike):

- floor: a plain Redis MGET of as many keys (values as large as a user's features),
  one round trip, nothing decoded: no reader can do less;
- Driftline: `FeastOnlineReader.read_keys` (sync client; each key built once, as serving
  keeps them), one round trip
  (by default one pipeline of HMGETs it packs itself, replies parsed by hiredis),
  every value decoded, statuses and event times; the same reader in `mode="script"`
  (a Lua script running an HMGET per row: the default before), with redis-py's
  Python parser instead of hiredis, and in `mode="pipeline"` (a redis-py pipeline of
  HMGETs, as for a Redis Cluster); the floor with redis-py's Python parser too;
- Feast SDK: Feast's own `FeatureStore.get_online_features` for the same rows, in
  Feast's venv (timed there, the same seconds).

    python -m benchmarks.features.feast_lookup [--seconds 3] [--rounds 5]

Writes benchmarks/results/feast-lookup.md and .json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from redis._parsers import _RESP2Parser
from redis.utils import HIREDIS_AVAILABLE

from driftline.common.feast_online import FeastOnlineReader
from driftline.local.servers import RedisServer
from driftline_testing.feast import FeastRepo, feast_built

RESULTS = Path(__file__).resolve().parents[1] / "results"
USERS = 1000
BATCHES = (1, 64)
CONTENDERS = ("floor", "floor_no_hiredis", "driftline", "script", "no_hiredis", "pipeline")
FEATURES = [
    "user_stats:txn_count",
    "user_stats:age",
    "user_stats:ratio",
    "user_stats:amount",
    "user_stats:segment",
    "user_stats:vip",
]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
    }


def run_for(fn: Callable[[], object], seconds: float, into: list[float]) -> None:
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        into.append(t1 - t0)
        if t1 >= end:
            return


def materialize(repo: FeastRepo) -> None:
    now = datetime.now(UTC)
    rng = random.Random(0)
    users = [
        {
            "user_id": u,
            "txn_count": rng.randrange(10_000),
            "age": rng.randrange(18, 90),
            "ratio": rng.random(),
            "amount": rng.random() * 1e4,
            "segment": rng.choice(["gold", "silver", "bronze"]),
            "vip": rng.random() < 0.1,
            "event_timestamp": now - timedelta(minutes=rng.randrange(1, 600)),
        }
        for u in range(USERS)
    ]
    one = now - timedelta(minutes=1)
    repo.materialize(
        {
            "user_stats": users,
            "merchant_risk": [{"merchant_id": "m", "risk": 0.5, "event_timestamp": one}],
            "user_merchant": [
                {"user_id": 0, "merchant_id": "m", "pair_count": 1, "event_timestamp": one}
            ],
        },
        start=now - timedelta(days=1),
        end=now + timedelta(minutes=1),
    )


def measure(seconds: float, rounds: int) -> dict[str, Any]:
    if not feast_built():
        raise SystemExit("Feast's venv is not built: run `make rig` first")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        repo = FeastRepo(Path(tmp) / "repo", server.port, project="bench")
        materialize(repo)
        reader = FeastOnlineReader(client, "bench", {"user_id": "int64"}, FEATURES)
        scripted = FeastOnlineReader(client, "bench", {"user_id": "int64"}, FEATURES, mode="script")
        piped = FeastOnlineReader(client, "bench", {"user_id": "int64"}, FEATURES, mode="pipeline")
        # The same packed read with redis-py's own Python parser instead of hiredis.
        plain_client = redis.Redis.from_url(server.url, parser_class=_RESP2Parser)
        plain = FeastOnlineReader(plain_client, "bench", {"user_id": "int64"}, FEATURES)
        # The floor's values: as large as what one user's HMGET returns.
        sample_key = reader.redis_key({"user_id": 0})
        assert sample_key is not None
        payload = sum(
            len(v or b"") for v in client.execute_command("HMGET", sample_key, *reader._fields)
        )
        client.mset({f"floor:{u}": os.urandom(payload) for u in range(USERS)})
        rng = random.Random(1)
        for batch in BATCHES:
            samples: dict[str, list[float]] = {name: [] for name in CONTENDERS}
            ids = [rng.sample(range(USERS), batch) for _ in range(256)]
            rows = [[{"user_id": u} for u in chosen] for chosen in ids]
            # Serving builds each entity's key once and keeps it: so do the readers here.
            keys = [[reader.redis_key(row) for row in batch_rows] for batch_rows in rows]
            floor_keys = [[f"floor:{u}" for u in chosen] for chosen in ids]

            floor_batches = itertools.cycle(floor_keys)
            row_batches = itertools.cycle(keys)
            piped_batches = itertools.cycle(keys)
            scripted_batches = itertools.cycle(keys)
            plain_batches = itertools.cycle(keys)

            def floor(batches: Iterator[list[str]] = floor_batches) -> object:
                return client.mget(next(batches))

            def floor_no_hiredis(batches: Iterator[list[str]] = floor_batches) -> object:
                return plain_client.mget(next(batches))

            def driftline(batches: Iterator[list[bytes | None]] = row_batches) -> object:
                return reader.read_keys(next(batches))

            def pipeline(batches: Iterator[list[bytes | None]] = piped_batches) -> object:
                return piped.read_keys(next(batches))

            def script(batches: Iterator[list[bytes | None]] = scripted_batches) -> object:
                return scripted.read_keys(next(batches))

            def no_hiredis(batches: Iterator[list[bytes | None]] = plain_batches) -> object:
                return plain.read_keys(next(batches))

            assert all(v is not None for v in reader.read(rows[0]).values["user_stats:txn_count"])
            for other in (scripted, piped, plain):
                assert other.read(rows[0]) == reader.read(rows[0])
            contenders = {
                "floor": floor,
                "floor_no_hiredis": floor_no_hiredis,
                "driftline": driftline,
                "script": script,
                "no_hiredis": no_hiredis,
                "pipeline": pipeline,
            }
            for fn in contenders.values():
                run_for(fn, 0.5, [])  # warm up
            redis_us: dict[str, float] = {}
            for _ in range(rounds):
                for name, fn in contenders.items():
                    client.config_resetstat()
                    run_for(fn, seconds / rounds, samples[name])
                    stats = client.info("commandstats")
                    # Redis' own time per read (us): what each contender costs the server.
                    command = {"script": "evalsha"}.get(
                        name, "mget" if "floor" in name else "hmget"
                    )
                    per_call = stats.get(f"cmdstat_{command}", {}).get("usec_per_call", 0.0)
                    hmgets = command == "hmget" and batch > 1
                    redis_us[name] = per_call * batch if hmgets else per_call
            results[str(batch)] = {
                name: {**percentiles(s), "redis_us": redis_us[name]} for name, s in samples.items()
            }
            results[str(batch)]["feast_sdk"] = repo.time_online_features(FEATURES, rows[0], seconds)
        client.close()
        plain_client.close()
    return results


def write(results: dict[str, Any], seconds: float, rounds: int) -> str:
    load = os.getloadavg()[0]
    lines = [
        "# Feast online-store lookup",
        "",
        f"`python -m benchmarks.features.feast_lookup --seconds {seconds:g} --rounds "
        f"{rounds}` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load:.1f} when done. Feast 0.67 "
        "(its own venv) materialized 6 features (int64, int32, float32, float64, string, "
        "bool) of 1,000 users into Redis on loopback; each batch asks for random users.",
        "A load average above the core count means other work shared the machine: "
        "compare the ratios within one run, not the milliseconds across runs.",
        "",
        "| batch | floor: MGET p50 / p99 ms | floor, no hiredis "
        "| Driftline reader (packed) p50 / p99 ms | x floor (p50 / p99) | x floor, no hiredis "
        "| before: script mode p50 / p99 ms | x floor | x floor, no hiredis "
        "| packed, no hiredis | pipeline mode | Feast SDK get_online_features |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(r: dict[str, float]) -> str:
        return f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f}"

    def times(r: dict[str, float], f: dict[str, float]) -> str:
        return f"{r['p50_ms'] / f['p50_ms']:.2f} / {r['p99_ms'] / f['p99_ms']:.2f}"

    for batch, r in results.items():
        f, fp, d, sc = r["floor"], r["floor_no_hiredis"], r["driftline"], r["script"]
        lines.append(
            f"| {batch} | {ms(f)} | {ms(fp)} | {ms(d)} | {times(d, f)} | {times(d, fp)} "
            f"| {ms(sc)} | {times(sc, f)} | {times(sc, fp)} "
            f"| {ms(r['no_hiredis'])} | {ms(r['pipeline'])} | {ms(r['feast_sdk'])} |"
        )
    lines += [
        "",
        "Redis' own time per read (INFO commandstats, µs): "
        + "; ".join(
            f"batch {batch}: "
            + ", ".join(f"{name} {r[name]['redis_us']:.1f}" for name in CONTENDERS)
            for batch, r in results.items()
        )
        + ".",
        "",
        "The floor is one MGET of as many keys, values as large as a user's features, "
        "nothing decoded, on the same client (hiredis parsing: "
        f"{'yes' if HIREDIS_AVAILABLE else 'no'}); `floor, no hiredis` is that MGET with "
        "redis-py's Python parser, the floor earlier results were measured against. "
        "Driftline's read is one round trip, "
        "every value decoded: by default (packed) one pipeline of HMGETs the reader packs "
        "itself, replies parsed by hiredis; `before` is the script mode, the default "
        "until now (a Lua script running an HMGET per row, one byte string back); "
        "`no hiredis` is the packed read with redis-py's Python parser; pipeline mode "
        "sends the HMGETs as a redis-py pipeline. All contenders alternate in each of "
        "the rounds. The Feast SDK figure is `FeatureStore.get_online_features` for the "
        "same rows, measured in Feast's venv.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "feast-lookup.md").write_text(text)
    (RESULTS / "feast-lookup.json").write_text(json.dumps(results, indent=2) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(write(measure(args.seconds, args.rounds), args.seconds, args.rounds))


if __name__ == "__main__":
    main()
