"""The predict path's throughput with Feast features, against the same model with
every feature in the request.

Real Feast (the venv of tests/rig/feast, `make rig`) materializes `user_stats` for
1,000 users into a Redis of its own. One small MLP (6 numeric inputs, hidden 32-16)
is served by two `python -m driftline.inference` processes, each pinned to the same
core, one at a time under load:

- request: all six features in the request body;
- feast: three in the request, three (`txn_count`, `ratio`, `amount`) read from
  Feast's Redis for the request's `entity_id` (a random user per request).

Batching on, the prediction log and the cache off (they cost both alike), `wrk`
with 32 connections pinned to the other core. The scenarios alternate `--repeat`
times and the best run of each is kept (a shared machine only ever slows a run).
The target: feast at least 0.7 of request.

    python -m benchmarks.features.feast_throughput [--seconds 5] [--repeat 3]

Writes benchmarks/results/feast-throughput.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.inference.run import Server, measure, running
from benchmarks.inference.wrk import SUMMARY, Load, ensure_wrk, run_wrk
from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer
from driftline_testing import start_kafka
from driftline_testing.feast import FeastRepo, feast_built
from driftline_testing.models import mlp_model, model_document, register_version

RESULTS = Path(__file__).resolve().parents[1] / "results"
USERS = 1000
PROJECT = "driftline_bench"
FROM_REQUEST = ("x1", "x2", "x3")
FROM_FEAST = ("txn_count", "ratio", "amount")
CONNECTIONS = 32


def random_entity_script(features: dict[str, float]) -> str:
    """A wrk script: each request names a random user of 1..USERS."""
    body = json.dumps({"entity_id": "ENTITY", "features": features})
    head, tail = body.split('"ENTITY"')
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        f"  local body = {json.dumps(head)} .. '\"' .. math.random(1, {USERS}) .. '\"' .. "
        f"{json.dumps(tail)}\n"
        "  return wrk.format(nil, nil, nil, body)\n"
        "end\n" + SUMMARY
    )


def materialize(folder: Path, redis_port: int) -> None:
    repo = FeastRepo(folder / "repo", redis_port, project=PROJECT)
    now = datetime.now(UTC).replace(microsecond=0)
    at = now - timedelta(minutes=5)
    users = [
        {"user_id": u, "txn_count": u % 50, "age": 30, "ratio": (u % 7) / 7, "amount": u * 1.5,
         "segment": "s", "vip": u % 2 == 0, "event_timestamp": at}
        for u in range(1, USERS + 1)
    ]  # fmt: skip
    repo.materialize(
        {
            "user_stats": users,
            "merchant_risk": [{"merchant_id": "m", "risk": 0.5, "event_timestamp": at}],
            "user_merchant": [
                {"user_id": 1, "merchant_id": "m", "pair_count": 1, "event_timestamp": at}
            ],
        },
        start=now - timedelta(days=1),
        end=now + timedelta(minutes=1),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (best kept)")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args(argv)
    if not feast_built():
        raise SystemExit("Feast's venv is not built: make rig")
    ensure_wrk()
    load_before = os.getloadavg()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-feast-")))
        print("starting MLflow, Redis, Feast's Redis and the broker; Feast materializes ...")
        mlflow = stack.enter_context(MlflowServer(root=tmp / "mlflow", log_path=tmp / "mlflow.log"))
        redis = stack.enter_context(RedisServer(log_path=tmp / "redis.log"))
        feast_redis = stack.enter_context(RedisServer(log_path=tmp / "feast-redis.log"))
        kafka = stack.enter_context(start_kafka(log_dir=tmp))
        materialize(tmp, feast_redis.port)

        def document(label: str, sourced: bool) -> dict[str, Any]:
            doc = model_document(
                f"feast-bench-{label}",
                tracking_uri=mlflow.tracking_uri,
                kafka=kafka.bootstrap_servers,
                redis=redis.url,
                numeric=(*FROM_REQUEST, *FROM_FEAST),
                inference={
                    "baseline": False,
                    "batching": {"enabled": True, "maxBatchSize": 64, "maxDelayMs": 2},
                },
            )
            doc["spec"]["model"]["registry"]["name"] = "feast-bench"
            if sourced:
                key = [{"joinKey": "user_id", "type": "int64"}]
                for feature in doc["spec"]["features"]:
                    if feature["name"] in FROM_FEAST:
                        feature["source"] = {
                            "feast": {
                                "project": PROJECT,
                                "featureView": "user_stats",
                                "name": feature["name"],
                                "entityKeys": key,
                            }
                        }
            return doc

        contract = FeatureContract(parse_dynamic_model(document("request", False)).spec)
        model = mlp_model(contract, (32, 16))
        register_version(mlflow.tracking_uri, "feast-bench", model, aliases=[ALIAS_CHAMPION])
        env = {"DRIFTLINE_INFERENCE_PREDICTION_LOG": "false"}
        feast_env = {**env, "DRIFTLINE_INFERENCE_FEAST_REDIS_URL": feast_redis.url}
        servers = [
            Server("request", document("request", False), env, args.server_cpu),
            Server("feast", document("feast", True), feast_env, args.server_cpu),
        ]
        values = {name: round(0.37 * i - 1.1, 3) for i, name in enumerate(FROM_REQUEST)}
        scripts = {
            "request": random_entity_script({**values, **dict.fromkeys(FROM_FEAST, 0.5)}),
            "feast": random_entity_script(values),
        }
        best: dict[str, tuple[Load, float]] = {}
        with running(servers) as started:
            for server in started:  # warm up
                run_wrk(
                    server.url + f"/v1/models/{server.name}/predict",
                    scripts[server.label],
                    8,
                    1,
                    args.client_cpu,
                )
            for _ in range(args.repeat):
                for server in started:
                    load, cpu_us = measure(
                        server, scripts[server.label], CONNECTIONS, args.seconds, args.client_cpu
                    )
                    if load.non_2xx:
                        raise SystemExit(f"{server.label}: {load.non_2xx} requests failed")
                    print(
                        f"  {server.label:<8} {load.rps:9.0f} req/s p50 {load.p50_ms:6.2f} ms "
                        f"p99 {load.p99_ms:6.2f} ms  server CPU {cpu_us:6.1f} us/request",
                        flush=True,
                    )
                    if server.label not in best or load.rps > best[server.label][0].rps:
                        best[server.label] = (load, cpu_us)
    rows = [
        {
            "features": label,
            "rps": round(load.rps),
            "p50_ms": round(load.p50_ms, 2),
            "p99_ms": round(load.p99_ms, 2),
            "server_cpu_us_per_request": round(cpu_us, 1),
        }
        for label, (load, cpu_us) in best.items()
    ]
    ratio = best["feast"][0].rps / best["request"][0].rps
    cpu_ratio = best["feast"][1] / best["request"][1]
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "options": {**vars(args), "connections": CONNECTIONS, "users": USERS},
        "rows": rows,
        "throughput_ratio": round(ratio, 3),
        "server_cpu_ratio": round(cpu_ratio, 3),
        "target": 0.7,
        "met": ratio >= 0.7,
    }
    write(result)


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# Throughput with Feast features",
        "",
        f"{machine['cores']} cores, load average {machine['load_before']} before and "
        f"{machine['load_after']} after, {machine['at']}. One inference process pinned "
        f"to one core, wrk with {result['options']['connections']} connections on the "
        "other; batching on, log and cache off; best of "
        f"{result['options']['repeat']} alternating runs of {result['options']['seconds']} s.",
        "",
        "| features | req/s | p50 ms | p99 ms | server CPU per request (us) |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['features']} | {row['rps']} | {row['p50_ms']} | {row['p99_ms']} | "
            f"{row['server_cpu_us_per_request']} |"
        )
    lines += [
        "",
        f"Feast / request throughput: **{result['throughput_ratio']}** (target 0.7: "
        f"{'met' if result['met'] else 'not met'}); server CPU per request "
        f"{result['server_cpu_ratio']}x.",
        "",
        "Command: `python -m benchmarks.features.feast_throughput`.",
        "",
    ]
    return "\n".join(lines)


def write(result: dict[str, Any]) -> None:
    text = markdown(result)
    print()
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feast-throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "feast-throughput.md").write_text(text)


if __name__ == "__main__":
    main()
