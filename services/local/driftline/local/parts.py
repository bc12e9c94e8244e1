"""How the local runtime starts the parts of the table, and configures each one.

Every part is a process, `python -m driftline.<part>`, configured only through its
environment: the DynamicModel YAML (the very file the user wrote) plus endpoint
overrides that point it at the embedded servers. This is exactly how the operator
runs them in pods, so a part cannot tell a laptop from a cluster.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from driftline.api import parts
from driftline.api.parts import Part
from driftline.common.registry import mlflow_environment


@dataclass(frozen=True)
class Endpoints:
    """Where the embedded (or user-given) servers of one local run listen."""

    kafka_bootstrap_servers: str
    redis_url: str
    mlflow_tracking_uri: str


@dataclass(frozen=True)
class PartSpec:
    """A part of the table (`driftline.api.parts`), as the local runtime starts it."""

    part: Part

    @property
    def name(self) -> str:
        return self.part.name

    @property
    def http(self) -> bool:
        """Serves the inference API (it has a port of its own besides metrics)."""
        return self.part.serves_http

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.part.module]

    def environment(
        self,
        model_file: Path,
        endpoints: Endpoints,
        metrics_port: int,
        http_port: int | None = None,
        data_dir: Path | None = None,
    ) -> dict[str, str]:
        p = self.part.env_prefix
        env = {
            f"{p}MODEL_FILE": str(model_file),
            f"{p}KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
            f"{p}REDIS_URL": endpoints.redis_url,
            f"{p}MLFLOW_TRACKING_URI": endpoints.mlflow_tracking_uri,
            f"{p}METRICS_PORT": str(metrics_port),
            **mlflow_environment(),
            "PYTHONUNBUFFERED": "1",
        }
        if self.part.data_setting and data_dir is not None:
            env[f"{p}{self.part.data_setting}"] = str(data_dir / self.name)
        if http_port is not None:
            env[f"{p}PORT"] = str(http_port)
            env[f"{p}HOST"] = "127.0.0.1"
        return env


# Locally every part is a process, the rollout too (on Kubernetes it runs in the
# operator's timer instead).
ALL_PARTS: tuple[PartSpec, ...] = tuple(PartSpec(p) for p in parts.PARTS)
INFERENCE = PartSpec(parts.INFERENCE)
TRAINER = PartSpec(parts.TRAINER)


def parts_by_name(names: list[str] | None) -> list[PartSpec]:
    if not names:
        return list(ALL_PARTS)
    known = {p.name: p for p in ALL_PARTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {sorted(known)}")
    return [known[n] for n in names]
