"""What every workload of the side-by-side benchmark shares: the machine, cores, rows.

A row is one contender on one workload: Driftline, a floor (the least any server
could cost: raw ONNX Runtime, a bare ASGI app, one Redis round trip, a raw torch
loop) or a peer. Every number is the median of the repeats, and the repeats of
all contenders alternate (A, B, C, A, B, C, ...), so a burst of load from other
work on the shared machine hits each of them alike.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DRIFTLINE = "driftline"
FLOOR = "floor"
PEER = "peer"


@dataclass
class Row:
    """One contender's result on one workload (medians over repeats)."""

    workload: str
    case: str
    """The condition within the workload (e.g. `32 connections, batching on`)."""
    contender: str
    kind: str
    """driftline, floor or peer."""
    values: dict[str, float | None] = field(default_factory=dict)
    repeats: dict[str, list[float]] = field(default_factory=dict)
    status: str = "ok"
    """ok, skipped (by choice, e.g. smoke mode) or failed (with `note`)."""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(repeats: dict[str, list[float]]) -> dict[str, float | None]:
    return {key: median(values) for key, values in repeats.items()}


@dataclass(frozen=True)
class Cores:
    """Where the server under test runs and where its load generator runs."""

    server: str | None
    client: str | None

    def pin(self, command: list[str], which: str | None) -> list[str]:
        return ["taskset", "-c", which, *command] if which is not None else command


def cores() -> Cores:
    """Two different cores when the machine has them and `taskset` exists."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) >= 2 and shutil.which("taskset"):
        return Cores(str(allowed[0]), str(allowed[1]))
    return Cores(None, None)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants still alive."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine() -> dict[str, Any]:
    """The machine and how busy it is, for reading the numbers in context."""
    model = cpu_model()
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    busiest = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()[:6]
    return {
        "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
        "busiest_processes": [" ".join(b.split()) for b in busiest],
    }
