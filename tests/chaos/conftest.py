"""The chaos suite's report: `make chaos` sets `DRIFTLINE_CHAOS_RESULTS` to a folder,
and the figures every test recorded are written there as `chaos.json` and `chaos.md`
when the session ends. A plain `make test` runs the same tests and only prints them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.support import FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    folder = os.environ.get("DRIFTLINE_CHAOS_RESULTS")
    if not folder or not FIGURES:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "passed": exitstatus == 0,
        "tests": FIGURES,
    }
    (out / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Chaos suite",
        "",
        f"{report['when']} on {report['machine']} (a shared machine: timings are indicative; "
        "the assertions are invariants and ratios). "
        f"Result: {'passed' if report['passed'] else 'FAILED'}.",
        "",
    ]
    for test, figures in FIGURES.items():
        lines += [f"## {test}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in figures.items()]
        lines.append("")
    (out / "chaos.md").write_text("\n".join(lines))
