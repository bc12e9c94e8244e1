"""The local runtime's retrain timer: when it fires, and that it runs the command."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from driftline.api.spec import TrainingSpec
from driftline.local.retrain_timer import RetrainTimer, next_run
from tests import polling


def test_next_run_follows_the_cron_or_the_period() -> None:
    now = datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC).timestamp()
    cron = TrainingSpec(mode="scheduled", schedule={"cron": "*/15 * * * *"})
    assert next_run(cron, now) == datetime(2026, 1, 1, 10, 15, tzinfo=UTC).timestamp()
    period = TrainingSpec(mode="scheduled", schedule_seconds=90)
    assert next_run(period, now) == now + 90


def test_the_timer_runs_the_command_on_schedule(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    timer = RetrainTimer(
        TrainingSpec(mode="scheduled", schedule_seconds=0.5),
        [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); print('retrained')"],
        lambda: {},
        tmp_path / "retrain.log",
    )
    timer.start()
    try:
        polling.wait_until(lambda: timer.runs >= 2, 20, "two runs", interval=0.1)
    finally:
        timer.stop()
    assert timer.last_exit == 0 and marker.read_text().startswith("xx")
    assert "retrained" in (tmp_path / "retrain.log").read_text()
    started = time.monotonic()
    timer.stop()
    assert time.monotonic() - started < 1
