"""What one rollout tick costs, and how it grows with the rollout's age.

The driver reads counters cumulatively from the bucket where the rollout began
(`driftline.rollout.evidence`), so a long rollout reads more 10-s buckets per tick.
This measures, side by side in one run on real servers (Redis, MLflow on loopback):

- `machine.step` alone (the pure decision),
- the evidence read from Redis for rollouts aged 1 min to 6 h (the counters'
  retention), every bucket filled as the joiner and inference would: the first
  read of a driver (every bucket) and the next ones (settled buckets are kept),
- the registry read (MLflow aliases over HTTP),
- a whole `RolloutDriver.tick()` at the oldest age,

and reports each as a ratio to the first evidence read of a 1-minute rollout.

    python -m benchmarks.rollout.tick [--repeat 50]

Writes benchmarks/results/rollout-tick.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.common.redis_state import (
    BUCKET_SECONDS,
    QualityStore,
    ServingStore,
    latency_bucket,
    quality_fields,
)
from driftline.local.servers import MlflowServer, RedisServer
from driftline.rollout import Evidence, Policy, RolloutState, Snapshot, VersionCounters, step
from driftline.rollout.driver import RolloutDriver
from driftline.rollout.registry import ModelRegistry
from driftline.rollout.store import MetricsSource

RESULTS = Path(__file__).resolve().parents[1] / "results"
AGES_MINUTES = (1, 30, 120, 360)
NS, NAME = "bench", "tick"


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()  # warm up connections and caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": samples[int(0.9 * (len(samples) - 1))],
    }


def fill(client: Any, now: float, age_s: float) -> None:
    """One bucket's worth of joiner and inference counters in every bucket of the age."""
    quality, serving = QualityStore(NS, NAME), ServingStore(NS, NAME)
    pipe = client.pipeline(transaction=False)
    for t in range(int(now - age_s), int(now) + 1, BUCKET_SECONDS):
        for version, variant in (("1", "stable"), ("2", "candidate"), ("2", "shadow")):
            fields = quality_fields("classification", 1, 1, [0.2, 0.8])
            quality.counters(version, variant).add(pipe, {k: v * 40 for k, v in fields.items()}, t)
        for variant in ("candidate", "shadow"):
            serving.counters("2", variant).add(
                pipe, {"requests": 40, "errors": 0, f"le_{latency_bucket(3)}": 40}, t
            )
        quality.agreement("1", "2").add(pipe, {"compared": 40, "agreed": 39}, t)
    pipe.execute()


def model_doc(tracking_uri: str, redis_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "model": {"registry": {"trackingUri": tracking_uri, "name": NAME}},
            "features": [{"name": "x"}],
            "kafka": {"bootstrapServers": "127.0.0.1:1"},
            "redis": {"url": redis_url},
            "rollout": {"canary": {"stepSeconds": 1e9}},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    with RedisServer() as redis_server, MlflowServer(root=root / "mlflow") as mlflow_server:
        client = redis.Redis.from_url(redis_server.url)
        now = time.time()
        fill(client, now, AGES_MINUTES[-1] * 60)
        source = MetricsSource(NS, NAME)

        policy = Policy(model=NAME)
        state = RolloutState(stage="canary", stable="1", candidate="2", weight=5, since=now)
        big = VersionCounters(labeled=10**6, correct=9 * 10**5, requests=10**6)
        snapshot = Snapshot(evidence=Evidence(candidate=big, stable=big))
        rows.append(
            {"what": "machine.step (pure)"}
            | timed(lambda: step(state, snapshot, policy, now + 1), args.repeat * 20)
        )
        for minutes in AGES_MINUTES:
            since = now - minutes * 60

            def cold(since: float = since) -> object:
                fresh = MetricsSource(NS, NAME)  # a driver's first tick after a start
                return fresh.evidence(client, stable="1", candidate="2", since=since, now=now)

            def warm(since: float = since) -> object:
                return source.evidence(client, stable="1", candidate="2", since=since, now=now)

            rows.append(
                {"what": f"evidence read, aged {minutes} min, first"} | timed(cold, args.repeat)
            )
            rows.append(
                {"what": f"evidence read, aged {minutes} min, next"} | timed(warm, args.repeat)
            )

        from mlflow import MlflowClient

        mlflow = MlflowClient(mlflow_server.tracking_uri, mlflow_server.tracking_uri)
        mlflow.create_registered_model(NAME)
        run = mlflow.create_run(experiment_id="0")
        for _ in range(2):
            mlflow.create_model_version(
                NAME, source=f"runs:/{run.info.run_id}/m", run_id=run.info.run_id
            )
        mlflow.set_registered_model_alias(NAME, ALIAS_CHAMPION, "1")
        mlflow.set_registered_model_alias(NAME, ALIAS_CANDIDATE, "2")
        registry = ModelRegistry(mlflow_server.tracking_uri, NAME)
        rows.append({"what": "registry read (MLflow aliases)"} | timed(registry.view, args.repeat))

        model = parse_dynamic_model(model_doc(mlflow_server.tracking_uri, redis_server.url))
        driver = RolloutDriver(model, client, registry)
        oldest = now - AGES_MINUTES[-1] * 60
        driver.state = RolloutState(
            stage="canary", stable="1", candidate="2", weight=5, since=oldest, started_at=oldest
        )
        rows.append(
            {"what": f"driver.tick(), aged {AGES_MINUTES[-1]} min"}
            | timed(lambda: driver.tick(now), args.repeat)
        )
        client.close()

    unit = rows[1]["median_ms"]
    for row in rows:
        row["ratio_to_1min_read"] = row["median_ms"] / unit
    write(rows, args.repeat)


def write(rows: list[dict[str, Any]], repeat: int) -> None:
    header = f"{'what':<40} {'median ms':>10} {'p90 ms':>10} {'x 1-min read':>13}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['what']:<40} {r['median_ms']:>10.3f} {r['p90_ms']:>10.3f} "
            f"{r['ratio_to_1min_read']:>13.2f}"
        )
    print("\n".join(lines))
    load = os.getloadavg()[0]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load:.1f} while measuring, repeat {repeat}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rollout-tick.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n"
    )
    md = [
        "# Rollout tick cost",
        "",
        f"`python -m benchmarks.rollout.tick` on {machine}; Redis and MLflow on loopback.",
        "A load average above the core count means other work shared the machine: compare",
        "the ratios within one run, not the milliseconds across runs.",
        "",
        "| what | median ms | p90 ms | x 1-min read |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['what']} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} "
            f"| {r['ratio_to_1min_read']:.2f} |"
            for r in rows
        ),
        "",
    ]
    (RESULTS / "rollout-tick.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
