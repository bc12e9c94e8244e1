"""Where a server's time goes: pyinstrument around `python -m driftline.inference`.

pyinstrument (a sampling profiler) is installed into a tools venv beside the peers'
and put on the profiled process's path only, so Driftline's own environment stays
as it ships. It samples the main thread, which runs the event loop and, for a small
model, the ONNX Runtime calls too; the wait in epoll is the server being idle.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.suite.peers import PeerEnv, cache_dir, install

TOOLS = PeerEnv("tools", ("pyinstrument>=4.6",), "pyinstrument")


def ready() -> bool:
    """True when pyinstrument can be used (installed now if it was not)."""
    return install(TOOLS, cache_dir() / "logs" / "tools.log") is None


def environment() -> dict[str, str]:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return {"PYTHONPATH": str(TOOLS.path / "lib" / version / "site-packages")}


def command(module: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "pyinstrument", "-r", "json", "-o", str(out), "-m", module]


EVENT_LOOP = "event loop in C (uvloop: socket I/O, HTTP parsing, waiting)"


def top(path: Path, n: int = 8) -> list[tuple[str, float]]:
    """The functions with the most own time, as shares of the sampled time.

    Imports at start (`<module>` frames) are left out: the load came after them.
    uvloop and httptools are C, so their work and the idle wait both show as the
    asyncio runner's own time: named for what it is.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    own: Counter[str] = Counter()

    def walk(frame: dict[str, Any]) -> None:
        if frame["function"] == "<module>" and frame is not data["root_frame"]:
            return
        children = frame.get("children", [])
        rest = frame["time"] - sum(c["time"] for c in children)
        where = Path(frame.get("file_path_short") or "?").name
        name = f"{frame['function']} ({where})"
        if where == "runners.py":
            name = EVENT_LOOP
        elif "pybind11" in name and frame["function"].endswith(".run"):
            name = "onnxruntime InferenceSession.run (C++)"
        own[name] += max(rest, 0.0)
        for child in children:
            walk(child)

    walk(data["root_frame"])
    total = sum(own.values()) or 1.0
    return [(name, seconds / total) for name, seconds in own.most_common(n)]
