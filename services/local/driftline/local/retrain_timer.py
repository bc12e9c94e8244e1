"""`training.mode: scheduled` under `driftline up`: a timer in place of the CronJob.

On Kubernetes the operator's CronJob runs `python -m driftline.trainer retrain`; here
a thread runs the same command against this run's servers, at the times
`training.schedule.cron` names (UTC), or every `scheduleSeconds` (exact, where a
CronJob rounds it to a cron). One run at a time, like the CronJob's Forbid: a run
still going when the next is due makes that one wait. Each run's output is appended
to `logs/retrain.log`; a failed run is logged and the next one starts from nothing.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from driftline.api.cron import next_after, parse
from driftline.api.spec import TrainingSpec

log = logging.getLogger(__name__)


def next_run(training: TrainingSpec, now: float) -> float:
    """When the next retrain is due (seconds since the epoch)."""
    if training.schedule.cron:
        at = next_after(parse(training.schedule.cron), datetime.fromtimestamp(now, UTC))
        return at.timestamp()
    return now + (training.schedule_seconds or 86_400)


class RetrainTimer:
    def __init__(
        self,
        training: TrainingSpec,
        argv: list[str],
        env: Callable[[], dict[str, str]],
        log_path: Path,
        timeout: float = 3 * 3600,
    ) -> None:
        self.training = training
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.timeout = timeout
        self.runs = 0
        self.last_exit: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retrain-timer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        due = next_run(self.training, time.time())
        log.info("scheduled retraining: next run at %s UTC", datetime.fromtimestamp(due, UTC))
        while not self._stop.wait(max(0.0, min(due - time.time(), 1.0))):
            if time.time() < due:
                continue
            self.run_once()
            due = next_run(self.training, time.time())

    def run_once(self) -> int:
        """Run the retrain command now; its exit status."""
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                self.argv, env=self.env(), stdout=out, stderr=subprocess.STDOUT
            )
            try:
                code = self._process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                code = self._process.wait()
        self._process = None
        self.runs += 1
        self.last_exit = code
        (log.info if code == 0 else log.warning)("retrain run %d exited %d", self.runs, code)
        return code

    def stop(self) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
        if self._thread is not None:
            self._thread.join(timeout=15)
