"""REST and gRPC side by side: the same server, the same model, the same client library.

One `python -m driftline.inference` process (pinned to one core) serves a tiny model
over REST and over the Open Inference Protocol's gRPC service
(`DRIFTLINE_INFERENCE_GRPC_PORT`). tritonclient drives both from its venv
(tests/rig/tritonclient, `make rig`), pinned to the other core: `tritonclient.http.aio`
with the binary tensor extension (its default) and `tritonclient.grpc.aio`, the same
inputs, the same number of requests in flight, one after the other. Reported per
protocol and batch size: requests/s and the p50/p99 latency the client saw.

    python -m benchmarks.inference.grpc [--quick] [--seconds 5] [--concurrency 16]

Writes benchmarks/results/grpc.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.inference.run import RESULTS, TINY, Server
from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline_testing import start_kafka
from driftline_testing.models import mlp_model, model_document, register_version
from driftline_testing.tritonclient import DRIVER, tritonclient_built, tritonclient_venv


def bench(
    address: str, protocol: str, model: str, rows: int, seconds: float, concurrency: int, cpu: str
) -> dict[str, float]:
    inputs = [
        {"name": name, "shape": [rows], "datatype": "FP32", "data": [0.37 * i] * rows}
        for i, name in enumerate(TINY.features)
    ]
    spec = {
        "protocol": protocol,
        "model": model,
        "inputs": inputs,
        "seconds": seconds,
        "concurrency": concurrency,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(spec, f)
        f.flush()
        python = str(tritonclient_venv() / "bin" / "python")
        done = subprocess.run(
            ["taskset", "-c", cpu, python, str(DRIVER), "bench", address, f.name],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run, batch 1 and 32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args(argv)
    if not tritonclient_built():
        raise SystemExit("tritonclient's venv is not built: run `make rig`")
    seconds = 3.0 if args.quick else args.seconds
    batches = (1, 32)
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-grpc-")))
        print("starting MLflow, Redis and the Kafka broker ...", flush=True)
        mlflow = stack.enter_context(MlflowServer(root=tmp / "mlflow", log_path=tmp / "mlflow.log"))
        redis = stack.enter_context(RedisServer(log_path=tmp / "redis.log"))
        kafka = stack.enter_context(start_kafka(log_dir=tmp))
        doc = model_document(
            "tiny-grpc",
            tracking_uri=mlflow.tracking_uri,
            kafka=kafka.bootstrap_servers,
            redis=redis.url,
            numeric=TINY.features,
            inference={
                "baseline": False,
                "batching": {"enabled": True, "maxBatchSize": 64, "maxDelayMs": 2},
            },
        )
        contract = FeatureContract(parse_dynamic_model(doc).spec)
        register_version(
            mlflow.tracking_uri,
            doc["spec"]["model"]["registry"]["name"],
            mlp_model(contract, TINY.hidden),
            aliases=[ALIAS_CHAMPION],
        )
        grpc_port = free_port()
        server = Server(
            "tiny", doc, {"DRIFTLINE_INFERENCE_GRPC_PORT": str(grpc_port)}, args.server_cpu
        )
        server.start()
        stack.callback(server.stop)
        server.wait_ready()
        addresses = {"http": f"127.0.0.1:{server.port}", "grpc": f"127.0.0.1:{grpc_port}"}
        for rows in batches:
            for protocol in ("http", "grpc"):
                print(f"{protocol}, {rows} row(s) per request ...", flush=True)
                before = server.cpu_seconds()
                result = bench(
                    addresses[protocol],
                    protocol,
                    server.name,
                    rows,
                    seconds,
                    args.concurrency,
                    args.client_cpu,
                )
                used = server.cpu_seconds() - before  # the client's warm-up requests too
                cpu_us = used / (result["requests"] + 20) * 1e6 if result["requests"] else 0.0
                results.append(
                    {"protocol": protocol, "rows": rows, **result, "server_cpu_us": cpu_us}
                )
    info = {
        "command": "python -m benchmarks.inference.grpc" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": seconds,
        "concurrency": args.concurrency,
        "results": results,
    }
    write(info)


def write(info: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grpc.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [
        "# REST and gRPC side by side",
        "",
        f"`{info['command']}` on {info['machine']}, Python {info['python']}, "
        f"load average {info['load_average']} when done ({info['at']}). One inference process "
        "pinned to one core serves the tiny model (3 features, MLP 32-16; batching on, "
        "prediction log on) over REST and gRPC; tritonclient's aio clients, pinned to the "
        f"other core, keep {info['concurrency']} requests in flight for {info['seconds']:.0f} s "
        "per line. REST uses tritonclient's binary tensor extension (its default). Server CPU "
        "per request is the server process's CPU time over the requests it served: what the "
        "protocol costs the server, whichever side (client or server) limited the rate.",
        "The machine is shared: a load average above the core count means other work ran "
        "beside; compare the protocols within one run, not the numbers across runs.",
        "",
        "| rows per request | protocol | requests/s | p50 ms | p99 ms | server CPU µs/request "
        "| errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in info["results"]:
        lines.append(
            f"| {r['rows']} | {'REST' if r['protocol'] == 'http' else 'gRPC'} | "
            f"{r['throughput']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['server_cpu_us']:,.0f} | {r['errors']} |"
        )
    (RESULTS / "grpc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
