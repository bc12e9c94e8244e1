"""The worker health endpoint answers probes and serves metrics."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from driftline.common.health import Heartbeat, serve_health
from driftline.local.servers import free_port


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_probes_follow_the_heartbeat_and_readiness() -> None:
    port = free_port()
    beat = Heartbeat(timeout_seconds=0.2)
    server = serve_health(port, beat)
    assert server is not None
    base = f"http://127.0.0.1:{port}"
    try:
        assert status(f"{base}/healthz") == 200
        assert status(f"{base}/readyz") == 503
        beat.ready = True
        assert status(f"{base}/readyz") == 200
        assert status(f"{base}/metrics") == 200
        time.sleep(0.3)
        assert status(f"{base}/healthz") == 503
        beat.beat()
        assert status(f"{base}/healthz") == 200
        assert status(f"{base}/nope") == 404
    finally:
        server.shutdown()
