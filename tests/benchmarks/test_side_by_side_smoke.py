"""The side-by-side benchmark in its seconds-long smoke variant, so its code cannot rot.

Runs `python -m benchmarks.run --smoke` as `make bench` runs the full one (tiny
sizes, no peers, no Driftline HTTP server) and checks that the report, its JSON and
its charts come out with a row for every workload and no failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = ("http", "cache", "trainer", "feedback", "drift")


def test_smoke_run_writes_every_workload(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "report.json").read_text())
    rows = result["rows"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert not failed, failed
    for workload in WORKLOADS:
        measured = [r for r in rows if r["workload"] == workload and r["status"] == "ok"]
        assert measured, f"no measured row for {workload}"
        assert any(r["kind"] == "floor" or r["kind"] == "peer" for r in measured) or (
            workload == "drift"
        ), f"{workload}: nothing to compare Driftline with"
        assert all(v is None or v >= 0 for r in measured for v in r["values"].values())
    kinds = {(r["workload"], r["kind"]) for r in rows if r["status"] == "ok"}
    assert ("trainer", "driftline") in kinds and ("cache", "driftline") in kinds
    assert result["targets"], "no target judged"
    report = (tmp_path / "REPORT.md").read_text()
    for title in ("HTTP predict", "Cache hit", "Trainer update path", "Feedback join", "Drift"):
        assert f"## {title}" in report
    # The machine line follows the load measured at the start (busy above 1).
    busy = result["machine_before"]["load_average"][0] > 1.0
    assert ("**A busy machine**" in report) == busy
    assert ("A quiet machine" in report) == (not busy)
    charts = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(charts) >= 5, charts
    assert all((tmp_path / c).read_bytes()[:4] == b"\x89PNG" for c in charts)


def test_the_report_calls_the_machine_busy_from_its_load_at_the_start() -> None:
    from benchmarks.suite.report import _busy

    assert _busy({"load_average": [1.5, 0.2, 0.1]})
    assert not _busy({"load_average": [0.6, 2.0, 3.0]})  # the last minute is what counts
    assert not _busy({})
