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
