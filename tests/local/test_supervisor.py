"""The supervisor restarts crashed parts with back-off and gives up on crash loops."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from driftline.local.supervisor import Supervisor


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_crashed_part_is_restarted(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    script = f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(0.3)"
    sup = Supervisor(backoff_initial=0.1, max_exits=100)
    try:
        sup.add("flaky", [sys.executable, "-c", script], {}, tmp_path / "flaky.log")
        assert wait_for(lambda: marker.exists() and len(marker.read_text()) >= 3)
        assert sup.parts()["flaky"].restarts >= 2
    finally:
        sup.stop()
    assert not sup.process("flaky").running


def test_a_crash_loop_is_given_up(tmp_path: Path) -> None:
    sup = Supervisor(backoff_initial=0.05, backoff_max=0.05, max_exits=2)
    try:
        sup.add("broken", [sys.executable, "-c", "raise SystemExit(1)"], {}, tmp_path / "b.log")
        assert wait_for(lambda: sup.parts()["broken"].state == "failed")
    finally:
        sup.stop()


def test_stop_ends_running_parts(tmp_path: Path) -> None:
    sup = Supervisor()
    proc = sup.add("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {},
                   tmp_path / "s.log")  # fmt: skip
    assert proc.running
    sup.stop(timeout=5)
    assert not proc.running


def test_peak_memory_counts_the_part_and_the_workers_it_forked(tmp_path: Path) -> None:
    """80 MiB held by a forked worker and 40 MiB by the part itself: the peak is
    their sum, sampled from the process group."""
    script = (
        "import os, time\n"
        "held = bytearray(40 * 2**20)\n"
        "if os.fork() == 0:\n"
        "    child = bytearray(80 * 2**20); time.sleep(30); os._exit(0)\n"
        "time.sleep(30)\n"
    )
    sup = Supervisor(memory_interval=0.2)
    try:
        sup.add("hungry", [sys.executable, "-c", script], {}, tmp_path / "hungry.log")
        assert wait_for(lambda: sup.peak_memory()["hungry"] >= 120 * 2**20, timeout=15)
        assert sup.peak_memory()["hungry"] < 400 * 2**20
    finally:
        sup.stop()
