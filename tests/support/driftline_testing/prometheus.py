"""A real Prometheus: on a loopback port scraping the parts of local runs, or on the
real node scraping a cluster's Pods with the chart's scrape configs.

Local runs: Debian's `prometheus` package (`apt-get install prometheus`; `make rig`
installs it when missing) or `DRIFTLINE_PROMETHEUS` naming a binary. The scrape
targets come from a file Prometheus watches (`file_sd_configs`): `add_run` lists
every part of a `driftline up` run (its `runtime.json`) with the labels the
Prometheus Operator gives a model's ServiceMonitor on a cluster: `namespace`, and
`job` = `<model>-<part>` (the part's Service).

On the real node (`RealNode.start_prometheus`): Prometheus built by the rig from
its Go module (Debian's is built without Kubernetes discovery), given
`scrape_configs` as they are, run in the node's network namespace. The TSDB lives
in a temporary folder and goes with `stop()`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from driftline.local.runtime import RuntimeInfo
from driftline.local.servers.process import InfraError, ManagedProcess, free_port


def prometheus_binary() -> str:
    explicit = os.environ.get("DRIFTLINE_PROMETHEUS")
    if explicit:
        return explicit
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None
    )
    if found is None:
        raise InfraError("no prometheus: apt-get install prometheus, or set DRIFTLINE_PROMETHEUS")
    return found


class PrometheusServer:
    """`prometheus` with a 1 s scrape interval: file-listed targets (`add_run`), or
    the `scrape_configs` given. `wrap` turns its command line into the one to run
    (`nsenter` into a network namespace, where `host` is an address)."""

    def __init__(
        self,
        root: Path,
        scrape_interval: str = "1s",
        *,
        scrape_configs: list[dict[str, Any]] | None = None,
        binary: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.root = root
        self.host = host
        self.port = port or free_port(host)
        self.targets_file = root / "targets.json"
        self._targets: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        if scrape_configs is None:
            self._write_targets()
            scrape_configs = [
                {
                    "job_name": "driftline",  # replaced per target by its `job` label
                    "scrape_timeout": scrape_interval,
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                    ],
                }
            ]
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": scrape_configs,
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = [
            binary or prometheus_binary(),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address={host}:{self.port}",
            "--log.level=warn",
        ]
        self.process = ManagedProcess(
            "prometheus", wrap(argv) if wrap else argv, log_path=root / "prometheus.log"
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self.process.start()
        self.process.wait_ready(
            lambda: _get(f"{self.url}/-/ready") is not None, timeout=60, what="/-/ready"
        )
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- targets ----------------------------------------------------------------------

    def add_run(self, info: RuntimeInfo) -> None:
        """Scrape every part of a local run, labelled as on a cluster."""
        with self._lock:
            for part, port in info.metrics_ports.items():
                self._targets[f"127.0.0.1:{port}"] = {
                    "namespace": info.namespace,
                    "job": f"{info.model}-{part}",
                }
            self._write_targets()

    def _write_targets(self) -> None:
        groups = [{"targets": [t], "labels": labels} for t, labels in self._targets.items()]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)  # Prometheus never reads half a file

    def scraped_jobs(self) -> dict[str, str]:
        """job -> health of its target (up, down, unknown), as Prometheus sees them now."""
        body = _get(f"{self.url}/api/v1/targets?state=active")
        if body is None:
            return {}
        return {t["labels"]["job"]: t["health"] for t in json.loads(body)["data"]["activeTargets"]}

    # -- queries ----------------------------------------------------------------------

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        """The series `expr` returns at any step between `start` and `end` (unix seconds)."""
        params = urllib.parse.urlencode(
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        )
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{params}", timeout=60) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # a bad query: the body says why
            answer = json.loads(exc.read() or b"{}")
        if answer.get("status") != "success":
            raise InfraError(f"prometheus: {answer.get('error')} in {expr!r}")
        return list(answer["data"]["result"])


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bytes(resp.read()) if resp.status == 200 else None
    except (OSError, ValueError):
        return None
