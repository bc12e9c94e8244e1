"""Running the app under uvicorn, with a drain on SIGTERM and optional worker processes.

SIGTERM (Kubernetes stopping the pod): readiness answers 503 at once, requests are
still served for `shutdown_delay_seconds` (while the load balancer takes the pod
out), then the listener closes, requests in flight finish within
`drain_timeout_seconds`, the prediction log and the stats are flushed, and the
process exits 0. A second signal cuts the drain short.

With `workers > 1` a small supervisor binds the port once and runs that many
worker processes on it; it passes SIGTERM on and exits when they have. Each
worker answers ready only when all of them are (`driftline.inference.workers`).
A worker whose supervisor dies (even of SIGKILL) drains and exits too: no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import MutableSequence
from types import FrameType

import uvicorn

from driftline.api import SpecError
from driftline.common.logs import configure_logging
from driftline.common.metrics import serve_metrics
from driftline.inference.app import create_app
from driftline.inference.service import InferenceService
from driftline.inference.settings import InferenceSettings
from driftline.inference.workers import SharedReadiness

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _fast_loop() -> dict[str, str]:
    """uvloop and httptools when installed: the fastest event loop and HTTP parser."""
    options = {}
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:  # pragma: no cover - the inference extra installs them; fall back without
        options["loop"] = "asyncio"
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:  # pragma: no cover
        options["http"] = "h11"
    return options


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a readiness-first, exit-0 drain."""

    def __init__(self, config: uvicorn.Config, service: InferenceService, delay: float) -> None:
        super().__init__(config)
        self.service = service
        self.delay = delay
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in `_captured_signals`: uvicorn would raise it again after the
        # drain, and the process would die of it instead of exiting 0.
        if self._exit_at is not None:
            self.force_exit = True
            return
        self.service.draining = True
        log.info("signal %d: not ready any more; draining", sig)
        self._exit_at = time.monotonic() + self.delay
        if self.delay <= 0:
            self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything alive now (modules, sessions, settings) lives as long as the process:
        # keep it out of every later GC pass, and collect the young generation less often
        # (the request path makes few reference cycles, and each pass costs throughput).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def build_server(
    settings: InferenceSettings, siblings: SharedReadiness | None = None
) -> DrainingServer:
    service = InferenceService(settings, siblings=siblings)
    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_seconds) or None,
        timeout_keep_alive=settings.keep_alive_seconds,
        server_header=False,
        proxy_headers=False,  # client addresses are not used; skip the middleware
        **_fast_loop(),  # type: ignore[arg-type]
    )
    return DrainingServer(config, service, settings.shutdown_delay_seconds)


def serve(settings: InferenceSettings) -> int:
    """Run until SIGTERM/SIGINT; the exit code of the process."""
    if settings.workers == 1:
        server = build_server(settings)
        server.run()
        return 0 if server.started else 3
    return _supervise(settings)


def _worker(settings: InferenceSettings, fd: int, flags: MutableSequence[int], index: int) -> None:
    # The supervisor's handlers came along with the fork; until uvicorn installs its own,
    # a signal must simply end this worker.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _drain_when_orphaned()
    configure_logging("inference", settings.log_level)
    sock = socket.socket(fileno=fd)
    server = build_server(settings, SharedReadiness(flags, index))
    server.run(sockets=[sock])
    sys.exit(0 if server.started else 3)


def _drain_when_orphaned() -> None:
    """Ask Linux for SIGTERM when the supervisor dies, even of SIGKILL: no orphan workers."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the supervisor was gone before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(settings: InferenceSettings) -> int:
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    log.info("listening on %s:%d with %d workers", settings.host, settings.port, settings.workers)
    # fork, not spawn: the listening socket is inherited; nothing heavy is loaded yet.
    context = multiprocessing.get_context("fork")
    flags = SharedReadiness.allocate(settings.workers)  # ready only when all of them are
    workers = [
        context.Process(
            target=_worker, args=(settings, sock.fileno(), flags, i), name=f"worker-{i}"
        )
        for i in range(settings.workers)
    ]
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.start()
    code = 0
    while any(w.is_alive() for w in workers):
        for worker in workers:
            worker.join(timeout=0.2)
            if not worker.is_alive() and worker.exitcode not in (0, None) and not stopping:
                log.error(
                    "worker %s exited with %s; stopping the others", worker.name, worker.exitcode
                )
                code = 1
                forward(signal.SIGTERM, None)
    sock.close()
    return code


def main() -> int:
    settings = InferenceSettings()  # model_file comes from the environment
    configure_logging("inference", settings.log_level)
    try:
        settings.model  # noqa: B018 - read and validate the DynamicModel before binding the port
    except SpecError as exc:
        log.error("%s", exc)
        return 2
    if settings.metrics_port and settings.metrics_port != settings.port and settings.workers == 1:
        serve_metrics(settings.metrics_port)  # /metrics is on the app port as well
    return serve(settings)
