"""Health and metrics endpoint for the worker parts (joiner, trainer, drift monitor).

One small HTTP server per process on the metrics port:

    GET /metrics   Prometheus text format
    GET /healthz   200 while the process's main loop is alive (liveness probe)
    GET /readyz    200 once the part is connected and working (readiness probe)

The inference service has its own FastAPI routes and does not use this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class Heartbeat:
    """The main loop calls `beat()` each turn; liveness fails when it stops beating."""

    def __init__(self, timeout_seconds: float = 60.0) -> None:
        self.timeout_seconds = timeout_seconds
        self._last = time.monotonic()
        self.ready = False

    def beat(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last < self.timeout_seconds


def serve_health(
    port: int,
    heartbeat: Heartbeat,
    ready: Callable[[], bool] | None = None,
    addr: str = "0.0.0.0",
) -> ThreadingHTTPServer | None:
    """Start the endpoint in a daemon thread; returns the server (None when port is 0)."""
    if not port:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = heartbeat.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
            elif self.path == "/readyz":
                ok = heartbeat.ready and (ready is None or ready())
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes are not news
            return

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
