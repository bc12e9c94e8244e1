"""Cache hit: what answering from Driftline's prediction cache costs over one Redis GET.

In-process, one request at a time against a real Redis on loopback: the
inference service's `PredictionCache.answer` for a row already cached (hash the
row, one MGET, decode in place) against the floors: one redis-py GET round trip
(asyncio client, the one the service uses, and the blocking one) and
`redis-benchmark -t get -c 1` (a C client: the least a round trip costs). The
HTTP rows of the cache (hits through the whole service) come from the HTTP workload.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.suite.common import DRIFTLINE, FLOOR, Cores, Row, median

WORKLOAD = "cache"
CASE = "in-process, 1 request at a time"


@dataclass(frozen=True)
class Options:
    requests: int = 20_000
    repeats: int = 5


def ensure_redis_benchmark() -> str | None:
    """Debian's redis-benchmark (package redis-tools), installed with apt-get when missing."""
    found = shutil.which("redis-benchmark")
    if not found and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "redis-tools"], check=False, capture_output=True
        )
        found = shutil.which("redis-benchmark")
    return found


def _redis_benchmark(binary: str, port: int, requests: int, pin: list[str]) -> float:
    """Microseconds per GET, one connection, no pipelining."""
    out = subprocess.run(
        [*pin, binary, "-p", str(port), "-t", "get", "-n", str(requests), "-c", "1", "-q"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    found = re.findall(r"([\d.]+) requests per second", out)
    if not found:
        raise RuntimeError(f"unexpected redis-benchmark output: {out[-200:]!r}")
    return 1e6 / float(found[-1])


async def _timed(n: int, call: Callable[[], Awaitable[object]]) -> float:
    for _ in range(100):
        await call()
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


def measure(options: Options, cores: Cores) -> list[Row]:
    import redis as redis_py
    import redis.asyncio as aioredis

    from benchmarks.suite.http import FEATURES, ROW, _contract, _document
    from driftline.inference.cache import PredictionCache
    from driftline.inference.contract import Rows
    from driftline.local.servers import RedisServer

    binary = ensure_redis_benchmark()
    samples: dict[str, list[float]] = {}
    affinity = os.sched_getaffinity(0)
    with RedisServer() as server:
        if cores.server is not None and server.process.pid:
            os.sched_setaffinity(server.process.pid, {int(cores.server)})
        if cores.client is not None:
            os.sched_setaffinity(0, {int(cores.client)})
        try:
            contract = _contract(_document("cache", "http://127.0.0.1:1", redis=server.url))
            rows = Rows(1, np.asarray([ROW], dtype=np.float32), None, [ROW])
            assert len(FEATURES) == len(ROW)

            async def run_round() -> dict[str, float]:
                client = aioredis.Redis.from_url(server.url)
                cache = PredictionCache(
                    client,
                    "driftline:bench:mlp",
                    contract,
                    ttl_seconds=3600,
                    timeout_seconds=1.0,
                    retry_seconds=5.0,
                )
                keys = cache.keys("1", "0" * 64, rows)
                cache.store(keys, [np.asarray([1], np.int64), np.asarray([[0.3, 0.7]], np.float32)])
                await asyncio.sleep(0.05)  # the write goes out on the next loop turn

                def miss(_rows: Rows) -> asyncio.Future[list[np.ndarray]]:
                    raise AssertionError("the row is cached: a hit never reaches the model")

                async def hit() -> None:
                    await cache.answer("1", "0" * 64, rows, miss)

                async def get() -> None:
                    await client.get(keys[0])

                out = {
                    "Driftline PredictionCache.answer (hit)": await _timed(options.requests, hit),
                    "redis-py asyncio GET round trip": await _timed(options.requests, get),
                }
                await cache.close()
                await client.aclose()
                return out

            sync = redis_py.Redis.from_url(server.url)
            key = b"bench:plain"
            sync.set(key, b"x" * 24)
            pin = ["taskset", "-c", cores.client] if cores.client is not None else []
            for round_ in range(options.repeats):
                measured = asyncio.run(run_round())
                start = time.perf_counter()
                for _ in range(options.requests):
                    sync.get(key)
                measured["redis-py GET round trip"] = (
                    (time.perf_counter() - start) / options.requests * 1e6
                )
                if binary:
                    measured["redis-benchmark GET, 1 connection"] = _redis_benchmark(
                        binary, server.port, options.requests, pin
                    )
                for name, value in measured.items():
                    samples.setdefault(name, []).append(value)
                print(f"cache: round {round_ + 1}/{options.repeats} done", flush=True)
        finally:
            os.sched_setaffinity(0, affinity)
    rows_out = []
    floor = samples.get("redis-py asyncio GET round trip", [])
    for name, values in samples.items():
        kind = DRIFTLINE if name.startswith("Driftline") else FLOOR
        ratios = [v / f for v, f in zip(values, floor, strict=True)] if floor else []
        rows_out.append(
            Row(
                WORKLOAD,
                CASE,
                name,
                kind,
                values={"us_per_request": median(values), "vs_floor": median(ratios)},
                repeats={"us_per_request": values},
            )
        )
    if not binary:
        rows_out.append(
            Row(WORKLOAD, CASE, "redis-benchmark GET, 1 connection", FLOOR, status="skipped",
                note="redis-benchmark not found (apt-get install redis-tools)")
        )  # fmt: skip
    return rows_out
