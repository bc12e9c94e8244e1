"""The settings base every part builds its own settings class on.

A part reads one DynamicModel YAML (mounted from a ConfigMap in Kubernetes; the
user's own file under `driftline up`) plus a few endpoint overrides from its
environment. Each part subclasses `PartSettings` with its own env prefix
(`DRIFTLINE_INFERENCE_`, `DRIFTLINE_JOINER_`, ...), builds it once at its entry
point and passes it down.

Credentials are never settings values: they are files in `secrets_dir` (a mounted
Secret), read by `driftline.common.connections` when a client is made.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftline.api import DynamicModel, load_dynamic_model
from driftline.common.connections import Connections


class PartSettings(BaseSettings):
    """Settings shared by every part; subclasses set their own `env_prefix`."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", extra="ignore", frozen=True)

    model_file: Path = Field(description="The DynamicModel YAML this part serves.")
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Overrides spec.kafka.bootstrapServers (local runtime, tests)."
    )
    redis_url: str | None = Field(default=None, description="Overrides spec.redis.url.")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Overrides spec.model.registry.trackingUri."
    )
    secrets_dir: Path = Field(
        default=Path("/var/run/secrets/driftline"),
        description="Mounted Secrets: kafka/ (username, password, mechanism, ca.crt), "
        "redis/ (username, password) and, for inference, feast/ (Feast's Redis: the same).",
    )
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="0 turns it off.")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @cached_property
    def model(self) -> DynamicModel:
        return load_dynamic_model(self.model_file)

    @cached_property
    def connections(self) -> Connections:
        spec = self.model.spec
        return Connections.resolve(
            kafka_bootstrap_servers=self.kafka_bootstrap_servers or spec.kafka.bootstrap_servers,
            redis_url=self.redis_url or spec.redis.url,
            mlflow_tracking_uri=self.mlflow_tracking_uri or spec.model.registry.tracking_uri,
            secrets_dir=self.secrets_dir,
        )
