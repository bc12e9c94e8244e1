"""HTTP predict: Driftline's service, the floors and the serving peers, one model.

The same ONNX MLP (32 float inputs, hidden 64-32, two classes) behind every
server, each asked for one row per request in its own JSON protocol (Driftline's
`/v1/models/<name>/predict`, the V2 inference protocol for MLServer, KServe's v1
`:predict`, BentoML's API). Every server is pinned to one core with `taskset`;
wrk (closed loop, 1/32/128 connections) and h2load (open loop, fixed rate) run
pinned to the other core. Contenders:

- floors: raw `session.run` in-process (no HTTP); a bare ASGI app (uvicorn +
  ONNX Runtime, no framework), with and without a micro-batcher;
- Driftline: batching off and on (prediction log off, as the peers have none),
  batching on with the prediction log (the default), the Open Inference Protocol v2
  route (`/v2/models/<name>/infer`, batching on, log off), and the cache (every
  request the same row: hits);
- peers, each in its own venv (`benchmarks.suite.peers`): MLServer with a custom
  ONNX runtime (adaptive batching off and on), KServe ModelServer, BentoML
  (batchable off and on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.inference.run import Server, floor
from benchmarks.inference.wrk import ensure_wrk, fixed_body_script, run_wrk
from benchmarks.suite import openloop
from benchmarks.suite import profile as profiler
from benchmarks.suite.common import DRIFTLINE, FLOOR, PEER, Cores, Row, median
from benchmarks.suite.peers import ENVS, QUIET_ENV, cache_dir, install, peer_servings
from benchmarks.suite.servers import Target, closed, launch, open_loop, stop, wait_ready
from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline_testing import start_kafka
from driftline_testing.models import mlp_model, model_document, register_version

WIDTH = 32
HIDDEN = (64, 32)
FEATURES = [f"x{i}" for i in range(1, WIDTH + 1)]
ROW = [round(0.37 * (i % 7) - 1.1, 3) for i in range(WIDTH)]
WORKLOAD = "http"
CACHE_WORKLOAD = "cache"


@dataclass(frozen=True)
class Options:
    seconds: float = 3.0
    repeats: int = 3
    connections: tuple[int, ...] = (1, 32, 128)
    rate: int = 400
    """Open loop: requests per second in all (over 8 connections)."""
    peers: bool = True
    driftline: bool = True
    profile: bool = True
    """Also run one Driftline server under pyinstrument (outside the timed rounds)."""
    """False: the floors only (the service needs MLflow, Redis and a broker: ~30 s)."""


def _document(
    label: str,
    tracking_uri: str,
    kafka: str = "127.0.0.1:1",
    redis: str = "redis://127.0.0.1:1/0",
    **inference: Any,
) -> dict[str, Any]:
    """The benchmark's DynamicModel for one Driftline setting (`label`)."""
    slug = "".join(c if c.isalnum() else "-" for c in label).strip("-").lower()
    doc = model_document(
        f"mlp-{slug}"[:50].rstrip("-"),
        tracking_uri=tracking_uri,
        kafka=kafka,
        redis=redis,
        numeric=FEATURES,
        inference={"baseline": False, **inference},
    )
    doc["spec"]["model"]["registry"]["name"] = "bench-mlp"
    return doc


def _contract(doc: dict[str, Any]) -> FeatureContract:
    return FeatureContract(parse_dynamic_model(doc).spec)


def _driftline_body() -> str:
    return json.dumps({"entity_id": "entity-17", "features": dict(zip(FEATURES, ROW, strict=True))})


def _oip_body() -> str:
    """The same row as an Open Inference Protocol v2 request (the packed `numeric` tensor,
    as `tritonclient` sends it in JSON)."""
    tensor = {"name": "numeric", "shape": [1, WIDTH], "datatype": "FP32", "data": ROW}
    return json.dumps({"inputs": [tensor], "parameters": {"entity_id": "entity-17"}})


@contextmanager
def started(
    options: Options, cores: Cores, work: Path, failed: list[Row]
) -> Iterator[tuple[list[Target], Path]]:
    """Infrastructure for Driftline, the model, and every server, started and checked."""
    with ExitStack() as stack:
        path = work / "mlp.onnx"
        targets: list[Target] = []
        if options.driftline:
            targets += _driftline_targets(stack, cores, work, path, options.profile)
        else:
            path.write_bytes(mlp_model(_contract(_document("x", "http://127.0.0.1:1")), HIDDEN))
            failed.append(
                Row(WORKLOAD, "all", "Driftline", DRIFTLINE, status="skipped",
                    note="floors only (smoke run): the service needs MLflow, Redis and a broker")
            )  # fmt: skip
        for batching in (False, True):
            port = free_port()
            target = Target(
                "bare ASGI + ORT" + (", micro-batching" if batching else ""),
                FLOOR,
                "bare",
                batching,
                f"http://127.0.0.1:{port}/predict",
                json.dumps({"numeric": ROW}),
                f"http://127.0.0.1:{port}/ready",
                log=work / f"bare-{batching}.log",
            )
            command = [
                sys.executable,
                "-m",
                "benchmarks.suite.apps.bare_asgi",
                str(path),
                str(port),
            ]
            command += ["batch"] if batching else []
            with target.log.open("wb") as out:  # type: ignore[union-attr]
                target.process = subprocess.Popen(
                    cores.pin(command, cores.server),
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    cwd=Path(__file__).resolve().parents[2],
                )
            stack.callback(stop, target.process)
            targets.append(target)

        if options.peers:
            errors = {
                name: install(env, cache_dir() / "logs" / f"{name}.log")
                for name, env in ENVS.items()
            }
            ports = [free_port() for _ in range(16)]
            for name, servings in peer_servings(path, ROW, ports, work).items():
                error = errors[name]
                for serving in servings:
                    target = Target(
                        serving.label,
                        PEER,
                        name,
                        serving.batching,
                        f"http://127.0.0.1:{serving.port}{serving.predict_path}",
                        serving.body,
                        f"http://127.0.0.1:{serving.port}{serving.ready_path}",
                        log=work / f"{serving.label.replace(' ', '-').replace(',', '')}.log",
                    )
                    if error is not None:
                        target.error = f"not installed: {error}"
                        targets.append(target)
                        continue
                    with target.log.open("wb") as out:  # type: ignore[union-attr]
                        target.process = subprocess.Popen(
                            cores.pin(serving.command, cores.server),
                            env={**os.environ, **QUIET_ENV, **serving.env},
                            stdout=out,
                            stderr=out,
                            cwd=serving.cwd,
                            start_new_session=True,
                        )
                    stack.callback(stop, target.process)
                    targets.append(target)
        if not options.peers:
            failed.append(
                Row(WORKLOAD, "all", "MLServer, KServe, BentoML", PEER, status="skipped",
                    note="peers not run (smoke run or --no-peers)")
            )  # fmt: skip
        for target in targets:
            if target.error or target.profile is not None:
                continue
            try:
                wait_ready(target.ready_url, target, 300)
            except (RuntimeError, httpx.HTTPError) as exc:
                target.error = f"did not start: {exc}"
                stop(target.process)
            print(f"  {target.label}: {target.error or 'ready'}", flush=True)
        failed.extend(
            Row(WORKLOAD, "all", t.label, t.kind, status="failed", note=t.error)
            for t in targets
            if t.error
        )
        yield [t for t in targets if not t.error], path


def measure(options: Options, cores: Cores) -> list[Row]:
    ensure_wrk()
    rows: list[Row] = []
    failed: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        with started(options, cores, work, failed) as (everything, model):
            targets = [t for t in everything if t.profile is None]
            for target in targets:  # warm up: first requests, lazy imports, JIT paths
                run_wrk(target.predict_url, fixed_body_script(target.body), 8, 1, cores.client)
            floor_samples: dict[str, list[float]] = {}
            for round_ in range(options.repeats):
                result = floor(_Case(), model, 1, options.seconds, cores.server or "0")
                floor_samples.setdefault("rps", []).append(result["runs_per_s"])
                floor_samples.setdefault("p50_ms", []).append(result["p50_ms"])
                floor_samples.setdefault("p99_ms", []).append(result["p99_ms"])
                # A, B, C, ... then B, C, ..., A: each contender takes its turn in every
                # position, so drifting load from other work is spread over all of them.
                order = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
                for connections in options.connections:
                    for target in order:
                        if target.label == "Driftline, cache hit" and connections == 128:
                            continue
                        closed(target, connections, options.seconds, cores)
                if openloop.available():
                    for target in order:
                        open_loop(target, options.rate, options.seconds, cores)
                print(f"http: round {round_ + 1}/{options.repeats} done", flush=True)
            rows += [_profile(t, options, cores) for t in everything if t.profile is not None]
            rows.append(
                Row(
                    WORKLOAD,
                    "in-process, 1 row per run",
                    "raw ONNX Runtime session.run",
                    FLOOR,
                    values={k: median(v) for k, v in floor_samples.items()},
                    repeats=floor_samples,
                )
            )
    for target in targets:
        for case, samples in target.samples.items():
            workload = CACHE_WORKLOAD if target.label == "Driftline, cache hit" else WORKLOAD
            rows.append(
                Row(
                    workload,
                    case,
                    target.label,
                    target.kind,
                    values={k: median(v) for k, v in samples.items()},
                    repeats=samples,
                )
            )
    if not openloop.available():
        rows.append(
            Row(WORKLOAD, f"open loop {options.rate} req/s", "all", FLOOR, status="skipped",
                note="h2load not found (apt-get install nghttp2-client)")
        )  # fmt: skip
    return rows + failed


def _profile(target: Target, options: Options, cores: Cores) -> Row:
    """32 connections against the profiled server, then its own time by function."""
    case, name = "profile, 32 connections", "Driftline, batching on, log off (pyinstrument)"
    launch(target)
    try:
        wait_ready(target.ready_url, target, 300)
        run_wrk(target.predict_url, fixed_body_script(target.body), 8, 1, cores.client)
        script = fixed_body_script(target.body)
        run_wrk(target.predict_url, script, 32, 4 * options.seconds, cores.client)
    except (RuntimeError, httpx.HTTPError, subprocess.CalledProcessError) as exc:
        return Row(WORKLOAD, case, name, DRIFTLINE, status="failed", note=f"not profiled: {exc}")
    finally:
        stop(target.process)  # pyinstrument writes the profile as the server exits
    assert target.profile is not None
    try:
        top = profiler.top(target.profile)
    except (OSError, ValueError, KeyError) as exc:
        return Row(WORKLOAD, case, name, DRIFTLINE, status="failed", note=f"no profile: {exc}")
    return Row(WORKLOAD, case, name, DRIFTLINE, values=dict(top))


@dataclass(frozen=True)
class _Case:
    """What `benchmarks.inference.run.floor` needs to know of the model."""

    name: str = "mlp32"
    width: int = WIDTH


BATCHING = {"enabled": True, "maxBatchSize": 64, "maxDelayMs": 2}
SETTINGS: dict[str, dict[str, Any]] = {
    "batching off": {"batching": {"enabled": False}},
    "batching on": {"batching": BATCHING},
    "batching on, log on": {"batching": BATCHING},
    "OIP v2, batching on": {"batching": BATCHING},
    "cache hit": {"batching": BATCHING, "cache": {"enabled": True, "ttlSeconds": 3600}},
}


def _driftline_targets(
    stack: ExitStack, cores: Cores, work: Path, path: Path, profile: bool
) -> list[Target]:
    """Driftline's servers, one per setting, with the model registered in a real MLflow."""
    print("http: starting MLflow, Redis and the Kafka broker ...", flush=True)
    mlflow = stack.enter_context(MlflowServer(root=work / "mlflow", log_path=work / "mlflow.log"))
    redis = stack.enter_context(RedisServer(log_path=work / "redis.log"))
    kafka = stack.enter_context(start_kafka(log_dir=work))
    docs = {
        label: _document(label, mlflow.tracking_uri, kafka.bootstrap_servers, redis.url, **spec)
        for label, spec in SETTINGS.items()
    }
    model = mlp_model(_contract(docs["batching on"]), HIDDEN)
    path.write_bytes(model)
    register_version(mlflow.tracking_uri, "bench-mlp", model, aliases=[ALIAS_CHAMPION])
    targets: list[Target] = []
    settings = list(docs.items())
    if profile and profiler.ready():
        settings.append(("batching on, profiled", docs["batching on"]))
    for label, doc in settings:
        log_on = "log on" in label
        env = {"DRIFTLINE_INFERENCE_PREDICTION_LOG": "true" if log_on else "false"}
        # `Server` (the inference benchmark's) writes the model file and the environment.
        server = Server(f"driftline-{label}", doc, env, cores.server or "0")
        oip = label.startswith("OIP")
        target = Target(
            f"Driftline, {label}" + ("" if log_on or label == "cache hit" else ", log off"),
            DRIFTLINE,
            DRIFTLINE,
            label != "batching off",
            f"{server.url}/v2/models/{server.name}/infer"
            if oip
            else f"{server.url}/v1/models/{server.name}/predict",
            _oip_body() if oip else _driftline_body(),
            f"{server.url}/v2/health/ready",
            log=server.dir / "server.log",
        )
        command = [sys.executable, "-m", "driftline.inference"]
        if label.endswith("profiled"):
            # Started after the timed rounds, so that its profile holds the load only.
            target.profile = server.dir / "profile.json"
            command = profiler.command("driftline.inference", target.profile)
            target.command = cores.pin(command, cores.server)
            target.env = {**server.env, **profiler.environment()}
            targets.append(target)
            continue
        with (server.dir / "server.log").open("wb") as out:
            target.process = subprocess.Popen(
                cores.pin(command, cores.server),
                env=server.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        stack.callback(stop, target.process)
        targets.append(target)
    return targets
