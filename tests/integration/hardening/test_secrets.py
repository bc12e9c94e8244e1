"""Secrets in running parts: used, and never in a log line, a metric, an answer or a status.

Builds on `tests/hardening/test_secrets.py` (settings and connections hide what they
read) and `tests/operator/test_pods.py` (credentials are mounted as files). Here two
real processes run at DEBUG with credentials from Secret files and the environment:

- `python -m driftline.inference` with the right Redis password (it must work: the
  serving counters reach Redis), SASL credentials for Kafka (the broker here speaks
  no SASL, so librdkafka fails and logs about it) and MLflow basic-auth credentials;
- `python -m driftline.rollout` with a wrong Redis password, so every tick logs an
  authentication failure.

Their logs, `/metrics`, the inference answers (good and bad requests, OpenAPI,
metadata) and every value the parts wrote to Redis (the rollout status among them)
are searched for the credentials.

The SASL path itself, against a broker that checks the credentials (PLAIN and
SCRAM-SHA-512, in clear and over TLS), is proven in `test_kafka_auth.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.common.redis_state import ServingStore
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline.local.servers.kafka import KafkaBroker
from driftline_testing.models import (
    mlp_model,
    model_document,
    register_version,
    write_model_file,
)
from tests.integration.inference.harness import wait_until

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "redis-pass-Lm47Ty"
WRONG_REDIS_PASSWORD = "wrong-redis-pass-Hx82"
KAFKA_PASSWORD = "kafka-pass-Zq91xW"
MLFLOW_PASSWORD = "mlflow-pass-Pk55Rd"
USERS = ["kafka-user-7f3a", "mlflow-user-q8s1"]
SECRETS = [REDIS_PASSWORD, WRONG_REDIS_PASSWORD, KAFKA_PASSWORD, MLFLOW_PASSWORD, *USERS]


def secrets_dir(folder: Path, redis_password: str, kafka: bool) -> Path:
    files = {"redis/password": redis_password}
    if kafka:
        files |= {
            "kafka/username": USERS[0],
            "kafka/password": KAFKA_PASSWORD,
            "kafka/mechanism": "PLAIN",
            "kafka/security.protocol": "SASL_PLAINTEXT",
        }
    for name, value in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    return folder


def start(part: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {
        **os.environ,
        **{f"DRIFTLINE_{part.upper()}_{k}": v for k, v in env.items()},
        "MLFLOW_TRACKING_USERNAME": USERS[1],
        "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"driftline.{part}"], env=full, stdout=out, stderr=out
        )


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(password=REDIS_PASSWORD, log_path=tmp_path / "redis.log") as server:
        yield server


def test_credentials_work_and_never_show(
    tmp_path: Path,
    unique: str,
    kafka: KafkaBroker,
    mlflow_server: MlflowServer,
    locked_redis: RedisServer,
) -> None:
    import redis

    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=locked_redis.url,
        inference={"baseline": False},
    )
    doc["spec"]["rollout"] = {"strategy": "canary"}
    model_file = write_model_file(tmp_path / "model.yaml", doc)
    contract = FeatureContract(parse_dynamic_model(doc).spec)
    version = register_version(
        mlflow_server.tracking_uri, unique, mlp_model(contract), aliases=[ALIAS_CHAMPION]
    )
    port, rollout_port = free_port(), free_port()
    common = {"MODEL_FILE": str(model_file), "LOG_LEVEL": "DEBUG"}
    inference = start(
        "inference",
        {
            **common,
            "SECRETS_DIR": str(secrets_dir(tmp_path / "right", REDIS_PASSWORD, kafka=True)),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "METRICS_PORT": "0",
            "STATS_FLUSH_SECONDS": "0.2",
            "DRAIN_TIMEOUT_SECONDS": "2",  # the log cannot reach Kafka: do not wait for it
        },
        tmp_path / "inference.log",
    )
    rollout = start(
        "rollout",
        {
            **common,
            "SECRETS_DIR": str(secrets_dir(tmp_path / "wrong", WRONG_REDIS_PASSWORD, kafka=False)),
            "METRICS_PORT": str(rollout_port),
            "TICK_SECONDS": "0.2",
        },
        tmp_path / "rollout.log",
    )
    url = f"http://127.0.0.1:{port}"
    seen: list[str] = []
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 90, "inference to load its model")
        predict = f"{url}/v1/models/{unique}/predict"
        row = {"x1": 1.0, "x2": 2.0, "x3": 3.0}
        for _ in range(20):
            answer = httpx.post(predict, json={"features": row, "entity_id": "e"}, timeout=10)
            assert answer.status_code == 200, answer.text
            seen.append(answer.text)
        for bad in ({"features": {"x1": "high"}}, {"features": []}, {"nope": 1}):
            seen.append(httpx.post(predict, json=bad, timeout=10).text)
        for path in ("/metrics", "/openapi.json", "/v2", f"/v2/models/{unique}"):
            seen.append(httpx.get(f"{url}{path}", timeout=10).text)

        # The right Redis password works: the serving counters arrived.
        client = redis.Redis.from_url(locked_redis.url, password=REDIS_PASSWORD)
        store = ServingStore("test", unique)
        wait_until(
            lambda: store.read(client, version, "stable", 60).requests >= 20,
            20,
            "serving counters in Redis",
        )
        # The wrong one fails, and the rollout says so (a few ticks' worth).
        rollout_log = tmp_path / "rollout.log"
        try:
            wait_until(
                lambda: "invalid username-password" in rollout_log.read_text(errors="replace"),
                60,
                "the rollout to log its Redis failure",
            )
        except AssertionError:
            print(rollout_log.read_text(errors="replace")[-3000:])
            raise
        time.sleep(1.0)
        seen.append(httpx.get(f"http://127.0.0.1:{rollout_port}/metrics", timeout=10).text)
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "string":
                seen.append(repr(client.get(key)))
            elif kind == "hash":
                seen.append(repr(client.hgetall(key)))
            seen.append(repr(key))
        client.close()
    finally:
        for process in (inference, rollout):
            process.send_signal(signal.SIGTERM)
        for process in (inference, rollout):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    logs = {
        p: (tmp_path / f"{p}.log").read_text(errors="replace") for p in ("inference", "rollout")
    }
    assert "loaded version" in logs["inference"], logs["inference"][-2000:]
    everything = "\n".join([*seen, *logs.values()])
    leaked = [s for s in SECRETS if s in everything]
    assert not leaked, f"credentials found: {leaked}"
    print(
        f"\nsecrets: {len(logs['inference']) + len(logs['rollout'])} bytes of DEBUG logs, "
        f"{len(seen)} answers, metrics pages and Redis values searched: no credential found"
    )
