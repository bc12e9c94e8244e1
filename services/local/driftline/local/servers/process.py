"""A server process that is always cleaned up.

Three layers make sure nothing is left running: `stop()` (called by context
managers and fixtures) ends the whole process group; an `atexit` hook stops every
process still registered when the interpreter exits normally or on Ctrl-C; and on
Linux each child asks the kernel for SIGKILL when its parent dies
(`PR_SET_PDEATHSIG`), which covers a parent killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


class InfraError(RuntimeError):
    """A server could not be started or did not become ready; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _death_signal(sig: signal.Signals) -> Callable[[], None]:
    def set_signal() -> None:  # pragma: no cover - runs in the child
        """Between fork and exec: ask the kernel to send `sig` when the parent dies."""
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, sig)

    return set_signal


class ManagedProcess:
    """One child server: started in its own process group, logged to a file.

    `guarded=True` is for servers that start children of their own: the command
    runs under `driftline.local.servers.guard`, which ends the whole group when the
    parent dies, so no grandchild is left behind either.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        guarded: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        if guarded:
            self.argv = [sys.executable, "-m", "driftline.local.servers.guard", "--", *self.argv]
        self._death_signal = signal.SIGTERM if guarded else signal.SIGKILL
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"driftline-{name}-", suffix=".log")
            os.close(fd)
            log_path = tmp
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_death_signal(self._death_signal),  # only prctl, takes no locks
            )
        except FileNotFoundError as exc:
            raise InfraError(f"{self.name}: cannot run {self.argv[0]!r}: {exc}") from exc
        finally:
            log_file.close()
        with _live_lock:
            _live.add(self)
        log.debug("started %s (pid %s): %s", self.name, self._proc.pid, " ".join(self.argv))
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
        proc = self._proc
        if proc is None:
            return
        with _live_lock:
            _live.discard(self)
        if proc.poll() is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Children that ignored SIGTERM but whose leader exited: end them too.
        self._signal_group(proc.pid, signal.SIGKILL)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL at once, like a crash (used by failure tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    # -- readiness ------------------------------------------------------------------

    def wait_ready(
        self, probe: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Poll `probe` until it returns True; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise InfraError(
                    f"{self.name} exited before it was ready ({what})\n{self.log_tail()}"
                )
            try:
                if probe():
                    return
            except Exception as exc:  # readiness probes fail in many ways while starting
                last_error = exc
            time.sleep(interval)
        self.stop()
        detail = f"; last error: {last_error}" if last_error else ""
        raise InfraError(
            f"{self.name} not ready after {timeout:.0f}s ({what}){detail}\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    # -- context manager ------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_all() -> None:
    """Stop every process this interpreter started and has not stopped yet."""
    with _live_lock:
        live = list(_live)
    for proc in live:
        with contextlib.suppress(Exception):
            proc.stop(timeout=3)


atexit.register(stop_all)


def process_group_rss(pgid: int) -> int:
    """Resident memory, in bytes, of every live process in a process group (a part
    and the workers it forked); 0 when none is left. Linux's /proc only."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # after the state: ppid, pgrp
                continue
            total += int((entry / "statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # gone while we looked
    return total
