"""Latency at a fixed request rate (open loop), with h2load.

A closed-loop generator (wrk) sends the next request only when an answer came
back, so a slow server is asked less and its latency looks better than users
would see it. h2load (Debian package `nghttp2-client`) with `--rps` sends at a
fixed rate per connection whatever the server does; its `--log-file` holds every
request's latency, from which the percentiles are taken here.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OpenLoad:
    sent_per_s: float
    answered_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int


def available() -> bool:
    return shutil.which("h2load") is not None


def run(
    url: str,
    body: str,
    rate: int,
    connections: int,
    seconds: float,
    pin: list[str] | None = None,
) -> OpenLoad:
    """`rate` requests per second in all, spread over `connections`, for `seconds`."""
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        data, log = Path(tmp) / "body.json", Path(tmp) / "requests.log"
        data.write_text(body, encoding="utf-8")
        command = [
            "h2load",
            "--h1",
            *("-c", str(connections), "-t", "1"),
            f"--rps={max(1, rate // connections)}",
            *("-D", str(max(1, round(seconds)))),
            *("-d", str(data)),
            *("-H", "content-type: application/json"),
            f"--log-file={log}",
            url,
        ]
        done = subprocess.run(
            [*(pin or []), *command], capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0 and not log.exists():
            raise RuntimeError(f"h2load failed: {done.stderr.strip()[:200]}")
        statuses, latencies = [], []
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                statuses.append(int(parts[1]))
                latencies.append(int(parts[2]))
    ok = np.asarray([lat for s, lat in zip(statuses, latencies, strict=True) if 200 <= s < 300])
    errors = len(statuses) - len(ok)
    duration = max(1, round(seconds))
    return OpenLoad(
        sent_per_s=len(statuses) / duration,
        answered_per_s=len(ok) / duration,
        p50_ms=float(np.percentile(ok, 50)) / 1000 if len(ok) else None,
        p99_ms=float(np.percentile(ok, 99)) / 1000 if len(ok) else None,
        errors=errors,
    )
