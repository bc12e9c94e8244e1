"""Triton's gRPC client, unchanged, driving a Driftline server from a venv of its own.

tritonclient[grpc] needs protobuf<7 and Driftline's environment pins protobuf 7, so the
client lives in tests/rig/tritonclient's venv (built by `make rig` into
`${DRIFTLINE_RIG_CACHE:-~/.cache/driftline-rig}`) and runs as a subprocess: its
`driver.py` makes the calls and prints their results as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

RIG = Path(__file__).resolve().parents[2] / "rig" / "tritonclient"
DRIVER = RIG / "driver.py"


def tritonclient_venv() -> Path:
    """The client venv this checkout's pins name (built or not)."""
    explicit = os.environ.get("DRIFTLINE_TRITONCLIENT_VENV")
    if explicit:
        return Path(explicit)
    out = subprocess.run(
        ["bash", str(RIG / "build.sh"), "--print"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip()) / "venv"


def tritonclient_built() -> bool:
    venv = tritonclient_venv()
    return (venv / "bin" / "python").is_file() and (venv.parent / "tritonclient.done").is_file()


class TritonGrpcClient:
    """tritonclient.grpc against `address` (host:port), one subprocess per batch of calls."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.python = str(tritonclient_venv() / "bin" / "python")

    def _run(self, command: str, payload: Any, timeout: float) -> Any:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as spec:
            json.dump(payload, spec)
            spec.flush()
            done = subprocess.run(
                [self.python, str(DRIVER), command, self.address, spec.name],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "PYTHONPATH": ""},
            )
        if done.returncode != 0:
            raise RuntimeError(f"driver.py {command} failed:\n{done.stdout}\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def calls(self, calls: list[dict[str, Any]], timeout: float = 60) -> list[dict[str, Any]]:
        """Each call's {"ok": result} or {"error": {"status", "message"}} (driver.py)."""
        result: list[dict[str, Any]] = self._run("calls", calls, timeout)
        return result

    def bench(self, spec: dict[str, Any], timeout: float = 300) -> dict[str, float]:
        """Throughput and p50/p99 of ModelInfer (driver.py's `bench`)."""
        result: dict[str, float] = self._run("bench", spec, timeout)
        return result


def tritonclient_fields() -> dict[str, dict[str, int]]:
    """{message: {field: number}} of tritonclient's own stubs, and its service's methods."""
    done = subprocess.run(
        [str(tritonclient_venv() / "bin" / "python"), str(DRIVER), "fields"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    result: dict[str, dict[str, int]] = json.loads(done.stdout)
    return result
