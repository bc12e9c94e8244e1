"""The HTTP serving peers, each in a virtual environment of its own.

MLServer, KServe's ModelServer and BentoML each pin their own FastAPI, pydantic,
grpcio and protobuf; installed beside Driftline they would fight over versions and
change what we measure. So each gets a venv in a cache outside the repository
(`~/.cache/driftline-bench/venvs/<peer>`, or `$DRIFTLINE_BENCH_CACHE`), made with
uv from PyPI once and reused while its package list is unchanged. Telemetry is off
and no model hub is reached: every peer serves the same ONNX file from disk with
ONNX Runtime, through a few lines of its own API (`benchmarks/suite/apps/`).

A peer that cannot be installed or started is reported with its error; the rest of
the run goes on without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"

QUIET_ENV = {
    # No usage reports, no hub downloads: the run is offline-capable once installed.
    "BENTOML_DO_NOT_TRACK": "True",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def cache_dir() -> Path:
    root = os.environ.get("DRIFTLINE_BENCH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "driftline-bench"


@dataclass(frozen=True)
class PeerEnv:
    """A virtual environment for one peer: its packages and where it lives."""

    name: str
    packages: tuple[str, ...]
    version_of: str
    """The package whose version names the peer in the report."""

    @property
    def path(self) -> Path:
        return cache_dir() / "venvs" / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.path / ".driftline-bench"

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.packages).encode()).hexdigest()[:16]

    def installed(self) -> bool:
        return self.stamp.exists() and self.stamp.read_text().strip() == self.fingerprint()

    def version(self) -> str:
        done = subprocess.run(
            [str(self.python), "-c", f"import importlib.metadata as m; "
             f"print(m.version({self.version_of!r}))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip() or "?"


ENVS = {
    env.name: env
    for env in (
        PeerEnv("mlserver", ("mlserver>=1.6,<2", "onnxruntime", "numpy<2"), "mlserver"),
        PeerEnv("kserve", ("kserve>=0.14", "onnxruntime", "numpy<2"), "kserve"),
        PeerEnv("bentoml", ("bentoml>=1.3,<2", "onnxruntime", "numpy<2"), "bentoml"),
    )
}


def uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise RuntimeError("uv not found (it comes with `make setup`)")
    return found


def install(env: PeerEnv, log: Path, timeout: float = 900.0) -> str | None:
    """Create or reuse `env`; returns None when ready, else the error in one line."""
    if env.installed():
        return None
    log.parent.mkdir(parents=True, exist_ok=True)
    quiet = {**os.environ, **QUIET_ENV, "UV_NO_PROGRESS": "1"}
    steps = [
        [uv(), "venv", "--clear", "--python", sys.executable, str(env.path)],
        [uv(), "pip", "install", "--python", str(env.python), *env.packages],
    ]
    with log.open("ab") as out:
        for step in steps:
            try:
                done = subprocess.run(
                    step, stdout=out, stderr=subprocess.STDOUT, env=quiet, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                return f"install timed out after {timeout:.0f} s"
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                return f"`{' '.join(step[:3])}` failed: " + " | ".join(tail)
    env.stamp.write_text(env.fingerprint() + "\n")
    return None


@dataclass
class Serving:
    """How one server is started and asked: the same ONNX model behind each."""

    label: str
    peer: str
    """Who serves: driftline, floor, mlserver, kserve, bentoml."""
    batching: bool
    command: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    body: str
    port: int
    cwd: Path | None = None
    grpc_port: int | None = None
    """The Open Inference Protocol's gRPC port, where the peer serves one."""


def peer_servings(
    model: Path, row: list[float], ports: list[int], work: Path
) -> dict[str, list[Serving]]:
    """Every peer's servers (batching off, and on where the peer offers it)."""
    env = {**QUIET_ENV, "BENCH_MODEL": str(model)}
    mls, ks, bento = ENVS["mlserver"], ENVS["kserve"], ENVS["bentoml"]
    out: dict[str, list[Serving]] = {"mlserver": [], "kserve": [], "bentoml": []}
    v2 = json.dumps(
        {"inputs": [{"name": "numeric", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    )
    for batching in (False, True):
        port, grpc, metrics = ports.pop(), ports.pop(), ports.pop()
        folder = work / f"mlserver-{'on' if batching else 'off'}"
        (folder / "mlp").mkdir(parents=True, exist_ok=True)
        shutil.copy(APPS / "mlserver_runtime.py", folder / "mlserver_runtime.py")
        settings = {
            "name": "mlp",
            "implementation": "mlserver_runtime.OnnxRuntime",
            "parameters": {"uri": str(model)},
            **({"max_batch_size": 64, "max_batch_time": 0.002} if batching else {}),
        }
        (folder / "mlp" / "model-settings.json").write_text(json.dumps(settings))
        (folder / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": port,
                    "grpc_port": grpc,
                    "metrics_port": metrics,
                    "parallel_workers": 0,
                    "host": "127.0.0.1",
                    "debug": False,
                }
            )
        )
        out["mlserver"].append(
            Serving(
                f"MLServer {mls.version() if mls.installed() else ''}".strip()
                + (", adaptive batching" if batching else ""),
                "mlserver",
                batching,
                [str(mls.path / "bin" / "mlserver"), "start", str(folder)],
                {**env, "PYTHONPATH": str(folder)},
                "/v2/health/ready",
                "/v2/models/mlp/infer",
                v2,
                port,
                cwd=folder,
                grpc_port=grpc,
            )
        )
    port = ports.pop()
    out["kserve"].append(
        Serving(
            f"KServe ModelServer {ks.version() if ks.installed() else ''}".strip(),
            "kserve",
            False,
            [str(ks.python), str(APPS / "kserve_model.py"), "--http_port", str(port)],
            env,
            "/v1/models/mlp",
            "/v1/models/mlp:predict",
            json.dumps({"instances": [row]}),
            port,
            cwd=work,
        )
    )
    for batching in (False, True):
        port = ports.pop()
        out["bentoml"].append(
            Serving(
                f"BentoML {bento.version() if bento.installed() else ''}".strip()
                + (", batchable" if batching else ""),
                "bentoml",
                batching,
                [
                    str(bento.path / "bin" / "bentoml"),
                    *("serve", "bentoml_service:Mlp", "--host", "127.0.0.1", "--port", str(port)),
                ],
                {**env, "BENCH_BATCHABLE": "1" if batching else "0", "BENTOML_HOME": str(work)},
                "/readyz",
                "/predict",
                json.dumps({"numeric": [row]}),
                port,
                cwd=APPS,
            )
        )
    return out
