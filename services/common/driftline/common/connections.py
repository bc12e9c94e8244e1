"""Endpoints and credentials of Kafka, Redis and MLflow, resolved once per process.

Credentials come from files of a mounted Secret, never from the spec or a log line:
`repr()` of these objects hides them, and nothing here logs them.

    <secrets_dir>/kafka/username, password, mechanism (PLAIN|SCRAM-SHA-256|SCRAM-SHA-512),
                        security.protocol (SASL_SSL|SASL_PLAINTEXT|SSL), ca.crt
    <secrets_dir>/redis/username, password
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap_servers: str
    security: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_secrets(cls, bootstrap_servers: str, secrets: Path) -> KafkaConnection:
        security: dict[str, str] = {}
        username, password = _read(secrets / "username"), _read(secrets / "password")
        ca = secrets / "ca.crt"
        protocol = _read(secrets / "security.protocol")
        if username and password:
            security["sasl.username"] = username
            security["sasl.password"] = password
            security["sasl.mechanism"] = _read(secrets / "mechanism") or "SCRAM-SHA-512"
            protocol = protocol or ("SASL_SSL" if ca.exists() else "SASL_PLAINTEXT")
        if ca.exists():
            security["ssl.ca.location"] = str(ca)
            protocol = protocol or "SSL"
        if protocol:
            security["security.protocol"] = protocol
        return cls(bootstrap_servers, security)

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings for any client, plus `extra` (dots as in librdkafka)."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.security, **extra}

    def __repr__(self) -> str:
        auth = self.security.get("security.protocol", "PLAINTEXT")
        return f"KafkaConnection({self.bootstrap_servers!r}, {auth})"


@dataclass(frozen=True)
class RedisConnection:
    url: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_secrets(cls, url: str, secrets: Path) -> RedisConnection:
        return cls(url, _read(secrets / "username"), _read(secrets / "password"))

    def client(self, **kwargs: Any) -> Any:
        """A redis-py client (connection pool inside; cheap to share per process)."""
        import redis

        return redis.Redis.from_url(
            self.url, username=self.username, password=self.password, **kwargs
        )

    def async_client(self, **kwargs: Any) -> Any:
        import redis.asyncio

        return redis.asyncio.Redis.from_url(
            self.url, username=self.username, password=self.password, **kwargs
        )


@dataclass(frozen=True)
class Connections:
    kafka: KafkaConnection
    redis: RedisConnection
    mlflow_tracking_uri: str

    @classmethod
    def resolve(
        cls,
        *,
        kafka_bootstrap_servers: str,
        redis_url: str,
        mlflow_tracking_uri: str,
        secrets_dir: Path,
    ) -> Connections:
        return cls(
            kafka=KafkaConnection.from_secrets(kafka_bootstrap_servers, secrets_dir / "kafka"),
            redis=RedisConnection.from_secrets(redis_url, secrets_dir / "redis"),
            mlflow_tracking_uri=mlflow_tracking_uri,
        )
