"""REST and gRPC side by side: the same server, the same model, the same client library.

One `python -m driftline.inference` process (pinned to one core) serves a tiny model
over REST and over the Open Inference Protocol's gRPC service
(`DRIFTLINE_INFERENCE_GRPC_PORT`). tritonclient drives both from its venv
(tests/rig/tritonclient, `make rig`), pinned to the other core: `tritonclient.http.aio`
with the binary tensor extension (its default) and `tritonclient.grpc.aio`, the same
inputs, the same number of requests in flight, one after the other. Reported per
protocol and batch size: requests/s and the p50/p99 latency the client saw.

A peer beside it: MLServer (its own venv, `benchmarks/suite/peers.py`) serves the same
ONNX file with ONNX Runtime and the same adaptive batching (up to 64 rows, 2 ms), pinned
to the same core, and the same tritonclient gRPC client drives its gRPC port. MLServer
logs no predictions; Driftline's lines have the prediction log on. A peer that cannot be
installed or started is reported with its error (`--no-peer` leaves it out).

    python -m benchmarks.inference.grpc [--quick] [--seconds 5] [--concurrency 16] [--no-peer]

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
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks.inference.run import RESULTS, TINY, Server
from benchmarks.suite.peers import ENVS, QUIET_ENV, cache_dir, install, peer_servings
from benchmarks.suite.servers import stop
from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline_testing import start_kafka
from driftline_testing.models import mlp_model, model_document, register_version
from driftline_testing.tritonclient import DRIVER, tritonclient_built, tritonclient_venv


def driftline_inputs(rows: int) -> list[dict[str, Any]]:
    """One tensor per feature, as Driftline's contract names them."""
    return [
        {"name": name, "shape": [rows], "datatype": "FP32", "data": [0.37 * i] * rows}
        for i, name in enumerate(TINY.features)
    ]


def peer_inputs(rows: int) -> list[dict[str, Any]]:
    """The same values as one `numeric` matrix, the ONNX graph's own input."""
    row = [0.37 * i for i in range(len(TINY.features))]
    return [{"name": "numeric", "shape": [rows, len(row)], "datatype": "FP32", "data": row * rows}]


def group_cpu_seconds(pid: int) -> float:
    """CPU time of every live process in the process group `pid` leads (a peer's workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_peer(
    stack: ExitStack, model: Path, work: Path, cpu: str
) -> tuple[str, str, subprocess.Popen[bytes]] | str:
    """MLServer with adaptive batching serving `model`, pinned to `cpu`: its label, gRPC
    address and process, or why it could not start."""
    env = ENVS["mlserver"]
    error = install(env, cache_dir() / "logs" / "mlserver.log")
    if error is not None:
        return f"MLServer not installed: {error}"
    ports = [free_port() for _ in range(16)]
    row = [0.0] * len(TINY.features)
    serving = next(s for s in peer_servings(model, row, ports, work)["mlserver"] if s.batching)
    assert serving.grpc_port is not None
    log = work / "mlserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", cpu, *serving.command],
            env={**os.environ, **QUIET_ENV, **serving.env},
            stdout=out,
            stderr=out,
            cwd=serving.cwd,
            start_new_session=True,
        )
    stack.callback(stop, process)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{serving.port}{serving.ready_path}").status_code == 200:
                return serving.label, f"127.0.0.1:{serving.grpc_port}", process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    return f"MLServer did not start: {tail}"


def bench(
    address: str,
    protocol: str,
    model: str,
    inputs: list[dict[str, Any]],
    seconds: float,
    concurrency: int,
    cpu: str,
) -> dict[str, float]:
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
    parser.add_argument("--no-peer", action="store_true", help="leave MLServer out")
    args = parser.parse_args(argv)
    if not tritonclient_built():
        raise SystemExit("tritonclient's venv is not built: run `make rig`")
    seconds = 3.0 if args.quick else args.seconds
    batches = (1, 32)
    results: list[dict[str, Any]] = []
    peer_note = "left out (--no-peer)"
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
        model = mlp_model(contract, TINY.hidden)
        register_version(
            mlflow.tracking_uri,
            doc["spec"]["model"]["registry"]["name"],
            model,
            aliases=[ALIAS_CHAMPION],
        )
        grpc_port = free_port()
        server = Server(
            "tiny", doc, {"DRIFTLINE_INFERENCE_GRPC_PORT": str(grpc_port)}, args.server_cpu
        )
        server.start()
        stack.callback(server.stop)
        server.wait_ready()
        lines: list[tuple[str, str, str, str, Callable[[], float]]] = [
            ("Driftline", "http", f"127.0.0.1:{server.port}", server.name, server.cpu_seconds),
            ("Driftline", "grpc", f"127.0.0.1:{grpc_port}", server.name, server.cpu_seconds),
        ]
        if not args.no_peer:
            (tmp / "mlp.onnx").write_bytes(model)
            print("starting MLServer ...", flush=True)
            peer = start_peer(stack, tmp / "mlp.onnx", tmp, args.server_cpu)
            if isinstance(peer, str):
                peer_note = peer
                print(f"  {peer}", flush=True)
            else:
                label, address, process = peer
                peer_note = f"{label}, gRPC"
                group = partial(group_cpu_seconds, process.pid)
                lines.append((label, "grpc", address, "mlp", group))
        for rows in batches:
            for who, protocol, address, name, cpu_seconds in lines:
                print(f"{who}, {protocol}, {rows} row(s) per request ...", flush=True)
                inputs = driftline_inputs(rows) if who == "Driftline" else peer_inputs(rows)
                before = cpu_seconds()
                result = bench(
                    address, protocol, name, inputs, seconds, args.concurrency, args.client_cpu
                )
                used = cpu_seconds() - before  # the client's warm-up requests too
                cpu_us = used / (result["requests"] + 20) * 1e6 if result["requests"] else 0.0
                results.append(
                    {
                        "server": who,
                        "protocol": protocol,
                        "rows": rows,
                        **result,
                        "server_cpu_us": cpu_us,
                    }
                )
    info = {
        "command": "python -m benchmarks.inference.grpc" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": seconds,
        "concurrency": args.concurrency,
        "peer": peer_note,
        "results": results,
    }
    write(info)


def write(info: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grpc.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [
        "# REST and gRPC side by side, and beside a peer's gRPC",
        "",
        f"`{info['command']}` on {info['machine']}, Python {info['python']}, "
        f"load average {info['load_average']} when done ({info['at']}). One inference process "
        "pinned to one core serves the tiny model (3 features, MLP 32-16; batching on, "
        "prediction log on) over REST and gRPC; tritonclient's aio clients, pinned to the "
        f"other core, keep {info['concurrency']} requests in flight for {info['seconds']:.0f} s "
        "per line. REST uses tritonclient's binary tensor extension (its default). Server CPU "
        "per request is the server's CPU time (its whole process group) over the requests it "
        "served: what the protocol costs the server, whichever side (client or server) limited "
        "the rate.",
        f"The peer: {info.get('peer', 'none')}; the same ONNX file with ONNX Runtime on the same "
        "core, adaptive batching up to 64 rows and 2 ms as Driftline's, driven by the same "
        "gRPC client; it logs no predictions (Driftline's lines do).",
        "The machine is shared: a load average above the core count means other work ran "
        "beside; compare the lines within one run, not the numbers across runs.",
        "",
        "| rows per request | server | protocol | requests/s | p50 ms | p99 ms "
        "| server CPU µs/request | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in info["results"]:
        lines.append(
            f"| {r['rows']} | {r.get('server', 'Driftline')} | "
            f"{'REST' if r['protocol'] == 'http' else 'gRPC'} | "
            f"{r['throughput']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['server_cpu_us']:,.0f} | {r['errors']} |"
        )
    ratios = []
    for rows in sorted({r["rows"] for r in info["results"]}):
        grpc = [r for r in info["results"] if r["rows"] == rows and r["protocol"] == "grpc"]
        ours = [r for r in grpc if r.get("server", "Driftline") == "Driftline"]
        peers = [r for r in grpc if r.get("server", "Driftline") != "Driftline"]
        if ours and peers and peers[0]["throughput"] and peers[0]["server_cpu_us"]:
            ratios.append(
                f"- {rows} row(s) per request: Driftline's gRPC answered "
                f"{ours[0]['throughput'] / peers[0]['throughput']:.2f}x the peer's requests/s "
                f"at {ours[0]['server_cpu_us'] / peers[0]['server_cpu_us']:.2f}x its server CPU "
                "per request."
            )
    if ratios:
        lines += [
            "",
            "Side by side (same run). The client, Python on one core, limits the requests/s of "
            "most lines (and its share of the core moves with the machine's load), so the "
            "server CPU per request is the figure that compares servers:",
            "",
            *ratios,
        ]
    (RESULTS / "grpc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
