"""Driving the service with `wrk`, a load generator that is not the service itself.

wrk (Debian package `wrk`) keeps a fixed number of connections busy and records
every latency. A small Lua script gives it the request body (fixed, or fresh
random features per request for cache misses) and prints the summary as JSON, so
percentiles come from wrk's own histogram, not from parsing its table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUMMARY = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"socket_errors\\": %d, " ..
    "\\"non_2xx\\": %d, \\"p50_us\\": %d, \\"p90_us\\": %d, \\"p99_us\\": %d, " ..
    "\\"mean_us\\": %.1f}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    socket_errors: int
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian with apt-get when missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("the inference benchmark needs wrk: apt-get install -y wrk")
    return found


def fixed_body_script(body: str) -> str:
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n" + SUMMARY
    )


def random_features_script(names: list[str]) -> str:
    """Every request with fresh random features (cache misses)."""
    fields = ", ".join(f'\\"{n}\\": %.9f' for n in names)
    args = ", ".join("math.random()" for _ in names)
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "math.randomseed(os.time())\n"
        "request = function()\n"
        f'  local body = string.format("{{\\"features\\": {{{fields}}}}}", {args})\n'
        "  return wrk.format(nil, nil, nil, body)\n"
        "end\n" + SUMMARY
    )


def run_wrk(
    url: str,
    script: str,
    connections: int,
    seconds: float,
    cpu: str | None,
) -> Load:
    """One wrk run (one thread, pinned to `cpu` when given)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = Path(handle.name)
    try:
        command = [
            ensure_wrk(),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(path),
            url,
        ]
        if cpu is not None:
            command = ["taskset", "-c", cpu, *command]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        path.unlink(missing_ok=True)
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        socket_errors=data["socket_errors"],
        non_2xx=data["non_2xx"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


def wrk_version() -> str:
    done = subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip()
