"""A server under test, and driving it: started in its own process group, checked
with one real request, then loaded closed-loop (wrk) or open-loop (h2load)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.inference.wrk import fixed_body_script, run_wrk
from benchmarks.suite import openloop
from benchmarks.suite.common import Cores, tree_cpu_seconds


@dataclass
class Target:
    """One running server under test."""

    label: str
    kind: str
    peer: str
    batching: bool
    predict_url: str
    body: str
    ready_url: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    error: str = ""
    profile: Path | None = None
    """Where pyinstrument writes this server's profile (not measured in the rounds)."""
    command: list[str] = field(default_factory=list)
    """For a server started later (`launch`): its command line and environment."""
    env: dict[str, str] = field(default_factory=dict)
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def record(self, case: str, **values: float | None) -> None:
        bucket = self.samples.setdefault(case, {})
        for key, value in values.items():
            if value is not None:
                bucket.setdefault(key, []).append(value)


def launch(target: Target) -> None:
    """Start a server whose command was kept for later, in a process group of its own."""
    assert target.log is not None
    with target.log.open("wb") as out:
        target.process = subprocess.Popen(
            target.command, env=target.env, stdout=out, stderr=out, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server and everything it started (its own process group)."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def check(target: Target) -> None:
    """One request must succeed before a server is measured: a 4xx would look fast."""
    answer = httpx.post(
        target.predict_url,
        content=target.body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    if answer.status_code != 200:
        raise RuntimeError(f"predict answered {answer.status_code}: {answer.text[:160]}")


def wait_ready(url: str, target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            tail = (
                target.log.read_text(errors="replace").strip().splitlines()[-3:]
                if target.log
                else []
            )
            raise RuntimeError(f"exited {target.process.returncode}: " + " | ".join(tail))
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                check(target)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"not ready after {timeout:.0f} s")


def closed(target: Target, connections: int, seconds: float, cores: Cores) -> None:
    before = tree_cpu_seconds(target.process.pid) if target.process else 0.0
    try:
        load = run_wrk(
            target.predict_url, fixed_body_script(target.body), connections, seconds, cores.client
        )
    except (subprocess.CalledProcessError, StopIteration) as exc:
        print(f"  {target.label} c={connections}: wrk failed ({exc})", flush=True)
        return
    used = (tree_cpu_seconds(target.process.pid) if target.process else 0.0) - before
    errors = load.non_2xx + load.socket_errors
    ok = max(load.requests - errors, 0)
    target.record(
        f"{connections} connection" + ("s" if connections > 1 else ""),
        rps=ok / load.seconds if load.seconds else 0.0,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        cpu_us_per_request=used / ok * 1e6 if ok else None,
        errors=float(errors),
    )
    print(
        f"  {target.label:<40} c={connections:<3} {load.rps:8.0f} req/s p50 {load.p50_ms:6.2f} ms "
        f"p99 {load.p99_ms:7.2f} ms errors {errors}",
        flush=True,
    )


def open_loop(target: Target, rate: int, seconds: float, cores: Cores) -> None:
    pin = ["taskset", "-c", cores.client] if cores.client is not None else None
    try:
        load = openloop.run(target.predict_url, target.body, rate, 8, seconds, pin)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"  {target.label} open loop failed: {exc}", flush=True)
        return
    target.record(
        f"open loop {rate} req/s",
        rps=load.answered_per_s,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        errors=float(load.errors),
    )
