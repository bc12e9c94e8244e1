"""What reading features from Feast's Redis online store costs Driftline, per batch.

Real Feast (the venv of tests/rig/feast, `make rig`) materializes one feature view
of 6 features (int64, int32, float32, float64, string, bool) for 1,000 users into
a real Redis on loopback. Then, at batch sizes 1 and 64, side by side in rounds
(so that the machine's load hits every contender alike):

- floor: a plain Redis MGET of as many keys (values as large as a user's features),
  one round trip, nothing decoded: no reader can do less;
- Driftline: `FeastOnlineReader.read` (sync client): keys built, one round trip
  (its Lua script running an HMGET per row), every value decoded, statuses and event
  times; and the same reader in `mode="pipeline"` (a pipeline of HMGETs, as for a
  Redis Cluster);
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

from driftline.common.feast_online import FeastOnlineReader
from driftline.local.servers import RedisServer
from driftline_testing.feast import FeastRepo, feast_built

RESULTS = Path(__file__).resolve().parents[1] / "results"
USERS = 1000
BATCHES = (1, 64)
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
        piped = FeastOnlineReader(client, "bench", {"user_id": "int64"}, FEATURES, mode="pipeline")
        # The floor's values: as large as what one user's HMGET returns.
        sample_key = reader.redis_key({"user_id": 0})
        assert sample_key is not None
        payload = sum(
            len(v or b"") for v in client.execute_command("HMGET", sample_key, *reader._fields)
        )
        client.mset({f"floor:{u}": os.urandom(payload) for u in range(USERS)})
        rng = random.Random(1)
        for batch in BATCHES:
            samples: dict[str, list[float]] = {"floor": [], "driftline": [], "pipeline": []}
            ids = [rng.sample(range(USERS), batch) for _ in range(256)]
            rows = [[{"user_id": u} for u in chosen] for chosen in ids]
            floor_keys = [[f"floor:{u}" for u in chosen] for chosen in ids]

            floor_batches = itertools.cycle(floor_keys)
            row_batches = itertools.cycle(rows)
            piped_batches = itertools.cycle(rows)

            def floor(batches: Iterator[list[str]] = floor_batches) -> object:
                return client.mget(next(batches))

            def driftline(batches: Iterator[list[dict[str, int]]] = row_batches) -> object:
                return reader.read(next(batches))

            def pipeline(batches: Iterator[list[dict[str, int]]] = piped_batches) -> object:
                return piped.read(next(batches))

            assert all(v is not None for v in reader.read(rows[0]).values["user_stats:txn_count"])
            contenders = {"floor": floor, "driftline": driftline, "pipeline": pipeline}
            for fn in contenders.values():
                run_for(fn, 0.5, [])  # warm up
            client.config_resetstat()
            for _ in range(rounds):
                for name, fn in contenders.items():
                    run_for(fn, seconds / rounds, samples[name])
            stats = client.info("commandstats")
            # Redis' own time per read (us): what each contender costs the server.
            redis_us = {
                "floor": stats.get("cmdstat_mget", {}).get("usec_per_call", 0.0),
                "driftline": stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0)
                if batch > 1
                else stats.get("cmdstat_hmget", {}).get("usec_per_call", 0.0),
                "pipeline": stats.get("cmdstat_hmget", {}).get("usec_per_call", 0.0) * batch,
            }
            results[str(batch)] = {
                name: {**percentiles(s), "redis_us": redis_us[name]} for name, s in samples.items()
            }
            results[str(batch)]["feast_sdk"] = repo.time_online_features(FEATURES, rows[0], seconds)
        client.close()
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
        "| batch | floor: MGET p50 / p99 ms | Driftline reader p50 / p99 ms "
        "| x floor (p50 / p99) | reader, pipeline mode p50 / p99 ms "
        "| Feast SDK get_online_features p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, r in results.items():
        f, d, p, s = r["floor"], r["driftline"], r["pipeline"], r["feast_sdk"]
        lines.append(
            f"| {batch} | {f['p50_ms']:.3f} / {f['p99_ms']:.3f} "
            f"| {d['p50_ms']:.3f} / {d['p99_ms']:.3f} "
            f"| {d['p50_ms'] / f['p50_ms']:.2f} / {d['p99_ms'] / f['p99_ms']:.2f} "
            f"| {p['p50_ms']:.3f} / {p['p99_ms']:.3f} "
            f"| {s['p50_ms']:.3f} / {s['p99_ms']:.3f} |"
        )
    lines += [
        "",
        "Redis' own time per read (INFO commandstats, µs): "
        + "; ".join(
            f"batch {batch}: floor {r['floor']['redis_us']:.1f}, Driftline "
            f"{r['driftline']['redis_us']:.1f}, pipeline mode {r['pipeline']['redis_us']:.1f}"
            for batch, r in results.items()
        )
        + ".",
        "",
        "The floor is one MGET of as many keys, values as large as a user's features, "
        "nothing decoded. Driftline's read is one round trip (a Lua script running an "
        "HMGET per row, one byte string back), every value decoded; pipeline mode sends "
        "the HMGETs as one pipeline instead. The Feast SDK figure is "
        "`FeatureStore.get_online_features` for the same rows, measured in Feast's venv.",
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
