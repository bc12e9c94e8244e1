"""Keeps the parts of a local run alive, the way a Deployment keeps its pods.

Each part runs as a `ManagedProcess` (own process group, killed with its parent).
A watcher thread restarts a part that exits without being asked to, with an
exponential back-off, and gives up after too many restarts in a short time
(CrashLoopBackOff, in Kubernetes words), so a part that cannot start does not spin.
It also keeps each part's peak resident memory (its process group, sampled every
`memory_interval` seconds): the figure a pod's memory limit is set from.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from driftline.local.servers import ManagedProcess, process_group_rss

log = logging.getLogger(__name__)


@dataclass
class Supervised:
    name: str
    process: ManagedProcess
    restarts: int = 0
    state: str = "starting"  # starting | running | backoff | failed | stopped
    next_start: float = 0.0
    recent_exits: list[float] = field(default_factory=list)
    peak_rss: int = 0  # bytes, the most its process group held at one sample


class Supervisor:
    def __init__(
        self,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        max_exits: int = 5,
        exit_window_seconds: float = 120.0,
        memory_interval: float = 2.0,
    ) -> None:
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_exits = max_exits
        self.exit_window_seconds = exit_window_seconds
        self.memory_interval = memory_interval
        self._next_sample = 0.0
        self._parts: dict[str, Supervised] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, env=env, log_path=log_path, cwd=cwd)
        with self._lock:
            self._parts[name] = Supervised(name, process)
        process.start()
        self._parts[name].state = "running"
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
            self._thread.start()
        return process

    def parts(self) -> dict[str, Supervised]:
        with self._lock:
            return dict(self._parts)

    def process(self, name: str) -> ManagedProcess:
        return self._parts[name].process

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                parts = list(self._parts.values())
            now = time.monotonic()
            for part in parts:
                self._check(part, now)
            if now >= self._next_sample:
                self._next_sample = now + self.memory_interval
                for part in parts:
                    pid = part.process.pid
                    if part.state == "running" and pid:
                        part.peak_rss = max(part.peak_rss, process_group_rss(pid))

    def peak_memory(self) -> dict[str, int]:
        """Each part's peak resident memory so far, in bytes."""
        with self._lock:
            return {name: part.peak_rss for name, part in self._parts.items()}

    def _check(self, part: Supervised, now: float) -> None:
        if part.state in {"failed", "stopped"}:
            return
        if part.state == "backoff":
            if now >= part.next_start:
                log.info("restarting %s (restart %d)", part.name, part.restarts + 1)
                part.process.start()
                part.restarts += 1
                part.state = "running"
            return
        if part.process.running:
            return
        # The part exited on its own: a crash, or a bug. Restart it after a pause.
        part.recent_exits = [t for t in part.recent_exits if now - t < self.exit_window_seconds]
        part.recent_exits.append(now)
        if len(part.recent_exits) > self.max_exits:
            part.state = "failed"
            log.error(
                "%s exited %d times in %.0fs; not restarting. Its log: %s",
                part.name,
                len(part.recent_exits),
                self.exit_window_seconds,
                part.process.log_path,
            )
            return
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (len(part.recent_exits) - 1))
        log.warning(
            "%s exited; restarting in %.0fs\n%s", part.name, delay, part.process.log_tail(8)
        )
        part.process.stop(timeout=1)
        part.state = "backoff"
        part.next_start = now + delay

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every part (they drain and commit), then wait; SIGKILL stragglers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            parts = list(self._parts.values())
        for part in parts:
            part.state = "stopped"
        threads = [
            threading.Thread(target=p.process.stop, kwargs={"timeout": timeout}) for p in parts
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
