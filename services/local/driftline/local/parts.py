"""The parts the local runtime starts, and how each one is configured.

Every part is a process, `python -m driftline.<part>`, configured only through its
environment: the DynamicModel YAML (the very file the user wrote) plus endpoint
overrides that point it at the embedded servers. This is exactly how the operator
runs them in pods, so a part cannot tell a laptop from a cluster.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from driftline.common.registry import mlflow_environment


@dataclass(frozen=True)
class Endpoints:
    """Where the embedded (or user-given) servers of one local run listen."""

    kafka_bootstrap_servers: str
    redis_url: str
    mlflow_tracking_uri: str


@dataclass(frozen=True)
class PartSpec:
    name: str
    """Short name, also the Python package `driftline.<name>`."""
    env_prefix: str
    http: bool = False
    """Serves the inference API (it has a port of its own besides metrics)."""
    data_setting: str | None = None
    """The setting naming a directory the part keeps between restarts, if any."""

    def argv(self) -> list[str]:
        return [sys.executable, "-m", f"driftline.{self.name}"]

    def environment(
        self,
        model_file: Path,
        endpoints: Endpoints,
        metrics_port: int,
        http_port: int | None = None,
        data_dir: Path | None = None,
    ) -> dict[str, str]:
        p = self.env_prefix
        env = {
            f"{p}MODEL_FILE": str(model_file),
            f"{p}KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
            f"{p}REDIS_URL": endpoints.redis_url,
            f"{p}MLFLOW_TRACKING_URI": endpoints.mlflow_tracking_uri,
            f"{p}METRICS_PORT": str(metrics_port),
            **mlflow_environment(),
            "PYTHONUNBUFFERED": "1",
        }
        if self.data_setting and data_dir is not None:
            env[f"{p}{self.data_setting}"] = str(data_dir / self.name)
        if http_port is not None:
            env[f"{p}PORT"] = str(http_port)
            env[f"{p}HOST"] = "127.0.0.1"
        return env


INFERENCE = PartSpec("inference", "DRIFTLINE_INFERENCE_", http=True)
JOINER = PartSpec("joiner", "DRIFTLINE_JOINER_")
TRAINER = PartSpec("trainer", "DRIFTLINE_TRAINER_", data_setting="CHECKPOINT_DIR")
DRIFT = PartSpec("drift", "DRIFTLINE_DRIFT_")
ROLLOUT = PartSpec("rollout", "DRIFTLINE_ROLLOUT_")

ALL_PARTS: tuple[PartSpec, ...] = (INFERENCE, JOINER, TRAINER, DRIFT, ROLLOUT)


def parts_by_name(names: list[str] | None) -> list[PartSpec]:
    if not names:
        return list(ALL_PARTS)
    known = {p.name: p for p in ALL_PARTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {sorted(known)}")
    return [known[n] for n in names]
