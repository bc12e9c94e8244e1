"""Metric names shared by several parts, and the metrics endpoint.

Names that belong to one part live in that part's own `metrics` module; the ones
here are emitted by common code (dead letters) or read across parts (dashboards,
alert rules and the rollout analysis refer to them).
"""

from __future__ import annotations

from prometheus_client import start_http_server

DEAD_LETTER_TOTAL = "driftline_dead_letter_messages_total"
"""Counter{topic, reason}: records sent to the dead-letter topic."""

BUILD_INFO = "driftline_build_info"
"""Info{part, version}: which part and release a process runs."""


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on `port` in a background thread (0 turns it off)."""
    if port:
        start_http_server(port, addr=addr)
