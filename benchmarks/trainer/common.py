"""What every trainer benchmark shares: the machine's state, tables, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.suite.common import cpu_model

RESULTS = Path(__file__).resolve().parent.parent / "results"


def machine() -> dict[str, Any]:
    """Enough to read the numbers in context: the box is shared, so load matters."""
    import numpy
    import torch

    model = cpu_model()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def pin_to_one_core() -> int:
    """Run this process (and torch) on one CPU; returns which."""
    import torch

    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    return cpu


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in text
    ]
    return "\n".join([line, rule, *body])


def write(name: str, title: str, sections: list[tuple[str, str]], data: dict[str, Any]) -> None:
    """benchmarks/results/<name>.md (tables and notes) and <name>.json (the numbers)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = data.setdefault("machine", machine())
    md = [
        f"# {title}",
        "",
        f"Machine: {info['cpu']} ({info['cpus']} CPUs), load average "
        f"{info['load_average']} at {info['at']}; torch {info['torch']}.",
        "",
    ]
    for heading, body in sections:
        md += [f"## {heading}", "", body, ""]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
