"""The chaos suite's shared run of the loop, and its report.

`make chaos` sets `DRIFTLINE_CHAOS_RESULTS` to a folder,
and the figures every test recorded are written there as `chaos.json` and `chaos.md`
when the run ends. A plain `make test` runs the same tests and only prints them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driftline.local.runtime import LocalRuntime, bootstrap_from_stream
from driftline_testing import start_kafka
from tests.chaos.loop import CONCEPT, Loop, loop_model_file
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


@pytest.fixture(scope="session")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """One local run of the whole loop for the suite: the tests take turns with it.

    Bootstrapped like the demo (version 1 from SEA), every part supervised. Each
    test leaves it running, with every part ready again.
    """
    directory = tmp_path_factory.mktemp("loop")

    def first_version(runtime: LocalRuntime) -> None:
        bootstrap_from_stream(runtime, "sea", CONCEPT, samples=3000, seed=7)

    runtime = LocalRuntime(
        loop_model_file(directory),
        state_dir=directory / "run",
        before_parts=first_version,
        # DRIFTLINE_CHAOS_KAFKA=apache runs the loop on Apache Kafka (the rig's), to
        # tell a broker's part in a failure from Driftline's.
        kafka=lambda log_path: start_kafka(
            os.environ.get("DRIFTLINE_CHAOS_KAFKA", "tansu"), log_dir=log_path.parent
        ),
        # The trainer checkpoints (then commits) every few seconds, so a test can
        # see it reach the end of the labeled topic soon after the traffic stops.
        # The parts run the code under test, where it is imported from (a source
        # tree on PYTHONPATH), not whatever copy the interpreter has installed.
        environment={
            "DRIFTLINE_TRAINER_CHECKPOINT_SECONDS": "3",
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
    )
    with runtime:
        runtime.wait_ready(timeout=300)
        running = Loop(runtime)
        try:
            yield running
        finally:
            running.close()
