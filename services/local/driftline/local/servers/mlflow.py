"""An MLflow tracking server with a SQLite backend store and local artifacts.

The same server users run (`mlflow server`), so model versions, aliases, tags and
artifact downloads go through the real REST API. One worker is enough on loopback.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Self

from driftline.local.servers.process import ManagedProcess, free_port

SERVER_ENVIRONMENT = {
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    # MLflow 3's job runner starts worker processes of its own: over 1 GiB more for
    # a server that only keeps versions and aliases. The chart's dev mode sets it too.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
"""How every MLflow server Driftline starts runs: locally and in the chart's dev mode."""


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with `sqlite:///<dir>/mlflow.db`."""

    kind = "mlflow"

    def __init__(
        self,
        root: str | Path | None = None,
        port: int | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="driftline-mlflow-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        artifacts = self.root / "artifacts"
        artifacts.mkdir(exist_ok=True)
        env = {**os.environ, **SERVER_ENVIRONMENT}
        self._process = ManagedProcess(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(artifacts),
                "--serve-artifacts",
            ],
            env=env,
            cwd=self.root,
            log_path=log_path,
            guarded=True,  # `mlflow server` runs uvicorn in a child process
        )

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return self._process

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as resp:
            return bool(resp.status == 200)

    def start(self, timeout: float = 90.0) -> Self:
        self._process.start()
        self._process.wait_ready(self._healthy, timeout=timeout, what="GET /health", interval=0.2)
        return self

    def stop(self) -> None:
        self._process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
