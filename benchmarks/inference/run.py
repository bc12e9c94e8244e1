"""The inference benchmark: raw ONNX Runtime vs the service over loopback HTTP.

    python -m benchmarks.inference [--seconds 5] [--repeat 2]

Starts real MLflow, Redis and a Kafka-protocol broker (embedded), registers a tiny
MLP (3 inputs, hidden 32-16) and a mid-size MLP (128 inputs, hidden 1024-1024-512,
1.7M parameters), then measures, side by side in one run:

- the floor: raw `session.run` in-process, one thread (no HTTP, no service code);
- the service (`python -m driftline.inference`, pinned with `taskset` to one core)
  with batching off/on, prediction logging off/on, cache miss/hit, at 1 and 32
  connections, driven by `wrk` pinned to the other core.

Every scenario is run `--repeat` times, interleaved with the others, and the best
run is kept: on a shared machine other work only ever slows a run down. The server's
own CPU time per request (from /proc) is reported too; unlike req/s, it hardly
depends on what else the machine is doing. Results: one table on stdout and
`benchmarks/results/inference.md` + `.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.inference import report
from benchmarks.inference.wrk import (
    Load,
    ensure_wrk,
    fixed_body_script,
    random_features_script,
    run_wrk,
)
from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline_testing import start_kafka
from driftline_testing.models import mlp_model, model_document, register_version

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class ModelCase:
    name: str
    width: int
    hidden: tuple[int, ...]

    @property
    def features(self) -> list[str]:
        return [f"x{i}" for i in range(1, self.width + 1)]

    def body(self) -> str:
        values = {name: round(0.37 * (i % 7) - 1.1, 3) for i, name in enumerate(self.features)}
        return json.dumps({"entity_id": "entity-17", "features": values})


TINY = ModelCase("tiny", 3, (32, 16))
MID = ModelCase("mid", 128, (1024, 1024, 512))


class Server:
    """One `python -m driftline.inference` process, pinned to one core."""

    def __init__(self, label: str, doc: dict[str, Any], env: dict[str, str], cpu: str) -> None:
        self.label = label
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = doc["metadata"]["name"]
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
        model_file = self.dir / "model.yaml"
        model_file.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
        self.env = {
            **os.environ,
            "DRIFTLINE_INFERENCE_MODEL_FILE": str(model_file),
            "DRIFTLINE_INFERENCE_HOST": "127.0.0.1",
            "DRIFTLINE_INFERENCE_PORT": str(self.port),
            "DRIFTLINE_INFERENCE_METRICS_PORT": "0",
            "DRIFTLINE_INFERENCE_INTRA_OP_THREADS": "1",
            "DRIFTLINE_INFERENCE_MODEL_DIR": str(self.dir / "models"),
            "DRIFTLINE_INFERENCE_LOG_LEVEL": "WARNING",
            **env,
        }
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        log = (self.dir / "server.log").open("wb")
        command = ["taskset", "-c", self.cpu, sys.executable, "-m", "driftline.inference"]
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        return self

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SystemExit(f"{self.label} exited: {(self.dir / 'server.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.label} not ready after {timeout:.0f}s")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def measure(
    server: Server, script: str, connections: int, seconds: float, client_cpu: str
) -> tuple[Load, float]:
    path = f"/v1/models/{server.name}/predict"
    before = server.cpu_seconds()
    load = run_wrk(server.url + path, script, connections, seconds, client_cpu)
    used = server.cpu_seconds() - before
    return load, (used / load.requests * 1e6 if load.requests else 0.0)


def floor(case: ModelCase, path: Path, rows: int, seconds: float, cpu: str) -> dict[str, float]:
    out = subprocess.run(
        [
            *("taskset", "-c", cpu, sys.executable, "-m", "benchmarks.inference.floor"),
            *(str(path), str(case.width), str(rows), str(seconds)),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one wrk run")
    parser.add_argument("--repeat", type=int, default=2, help="runs per scenario (best kept)")
    parser.add_argument("--server-cpu", default="0", help="the core the server is pinned to")
    parser.add_argument("--client-cpu", default="1", help="the core wrk is pinned to")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="only rewrite the report from the rows in benchmarks/results/inference.json",
    )
    args = parser.parse_args(argv)
    if args.rewrite:
        saved = json.loads((RESULTS / "inference.json").read_text(encoding="utf-8"))
        result = report.summarize(
            saved["rows"], saved["machine_before"], saved["machine_after"], saved["options"]
        )
        write(result)
        return
    ensure_wrk()
    state_before = report.machine_state()
    rows: list[dict[str, Any]] = []

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-infra-")))
        print("starting MLflow, Redis and the Kafka broker ...", flush=True)
        mlflow = stack.enter_context(MlflowServer(root=tmp / "mlflow", log_path=tmp / "mlflow.log"))
        redis = stack.enter_context(RedisServer(log_path=tmp / "redis.log"))
        kafka = stack.enter_context(start_kafka(log_dir=tmp))

        def document(case: ModelCase, label: str, **inference: Any) -> dict[str, Any]:
            slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
            doc = model_document(
                f"{case.name}-{slug}".replace("--", "-"),
                tracking_uri=mlflow.tracking_uri,
                kafka=kafka.bootstrap_servers,
                redis=redis.url,
                numeric=case.features,
                inference={"baseline": False, **inference},
            )
            doc["spec"]["model"]["registry"]["name"] = f"bench-{case.name}"
            return doc

        files: dict[str, Path] = {}
        for case in (TINY, MID):
            contract = FeatureContract(parse_dynamic_model(document(case, "x")).spec)
            model = mlp_model(contract, case.hidden)
            files[case.name] = tmp / f"{case.name}.onnx"
            files[case.name].write_bytes(model)
            register_version(
                mlflow.tracking_uri, f"bench-{case.name}", model, aliases=[ALIAS_CHAMPION]
            )

        print("floor: raw ONNX Runtime in-process ...", flush=True)
        for case, batch in ((TINY, 1), (MID, 1), (MID, 32)):
            result = floor(case, files[case.name], batch, args.seconds, args.server_cpu)
            rows.append(report.floor_row(case.name, batch, result))

        def servers_for(
            case: ModelCase, specs: list[tuple[str, dict[str, Any], dict[str, str]]]
        ) -> list[Server]:
            return [
                Server(
                    f"{case.name}-{label}", document(case, label, **inference), env, args.server_cpu
                )
                for label, inference, env in specs
            ]

        off = {"batching": {"enabled": False}}
        on = {"batching": {"enabled": True, "maxBatchSize": 64, "maxDelayMs": 2}}
        no_log = {"DRIFTLINE_INFERENCE_PREDICTION_LOG": "false"}
        with_log = {"DRIFTLINE_INFERENCE_PREDICTION_LOG": "true"}
        cache = {**on, "cache": {"enabled": True, "ttlSeconds": 600}}
        plans: list[
            tuple[
                ModelCase,
                list[tuple[str, dict[str, Any], dict[str, str]]],
                list[tuple[str, str, int]],
            ]
        ] = [
            (
                TINY,
                [
                    ("batching off", off, no_log),
                    ("batching on", on, no_log),
                    ("batching on, log on", on, with_log),
                ],
                [
                    ("batching off", "fixed", 1),
                    ("batching on", "fixed", 1),
                    ("batching off", "fixed", 32),
                    ("batching on", "fixed", 32),
                    ("batching on, log on", "fixed", 32),
                ],
            ),
            (
                TINY,
                [("cache", cache, no_log)],
                [("cache", "random", 32), ("cache", "fixed", 32)],
            ),
            (
                MID,
                [
                    ("batching off", off, no_log),
                    ("batching on", on, no_log),
                    ("cache", cache, no_log),
                ],
                [
                    ("batching off", "fixed", 32),
                    ("batching on", "fixed", 32),
                    ("cache", "random", 32),
                    ("cache", "fixed", 32),
                ],
            ),
        ]
        for case, specs, scenarios in plans:
            print(f"{case.name}: starting {len(specs)} server(s) ...", flush=True)
            with running(servers_for(case, specs)) as started:
                by_label = {s.label.removeprefix(f"{case.name}-"): s for s in started}
                for server in started:  # warm up: first requests, lazy imports
                    run_wrk(
                        server.url + f"/v1/models/{server.name}/predict",
                        fixed_body_script(case.body()),
                        8,
                        1,
                        args.client_cpu,
                    )
                best: dict[tuple[str, str, int], tuple[Load, float]] = {}
                for _ in range(args.repeat):
                    for label, body, connections in scenarios:
                        script = (
                            fixed_body_script(case.body())
                            if body == "fixed"
                            else random_features_script(case.features)
                        )
                        load, cpu_us = measure(
                            by_label[label], script, connections, args.seconds, args.client_cpu
                        )
                        key = (label, body, connections)
                        if key not in best or load.rps > best[key][0].rps:
                            best[key] = (load, cpu_us)
                        print(
                            f"  {label:<22} {body:<6} c={connections:<3} {load.rps:9.0f} req/s "
                            f"p50 {load.p50_ms:6.2f} ms p99 {load.p99_ms:6.2f} ms",
                            flush=True,
                        )
                for (label, body, connections), (load, cpu_us) in best.items():
                    rows.append(
                        report.service_row(case.name, label, body, connections, load, cpu_us)
                    )

    options = {k: v for k, v in vars(args).items() if k != "rewrite"}
    write(report.summarize(rows, state_before, report.machine_state(), options))


def write(result: dict[str, Any]) -> None:
    print()
    print(report.table(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "inference.md").write_text(report.markdown(result), encoding="utf-8")
    print(f"\nwritten: {RESULTS / 'inference.md'} and inference.json")
