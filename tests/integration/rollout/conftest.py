"""Fixtures for the rollout driver against real Redis, MLflow and Kafka.

`rollout_model` writes a DynamicModel YAML pointing at the test servers, with short
steps; `registry` registers versions 1-3 of that model in MLflow (champion = 1);
`producer` publishes the driver's events.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.api import DynamicModel, load_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_producer
from driftline.local.servers import MlflowServer
from driftline.local.servers.kafka import KafkaBroker
from tests.integration.rollout.support import ModelFactory


@pytest.fixture
def rollout_model(
    tmp_path: Path, unique: str, kafka: KafkaBroker, mlflow_server: MlflowServer
) -> ModelFactory:
    """Write a DynamicModel for this test; keyword arguments override `spec.rollout`."""

    def make(
        redis_url: str = "redis://127.0.0.1:6379/0",
        monitoring: dict[str, Any] | None = None,
        **rollout: Any,
    ) -> DynamicModel:
        spec_rollout = {
            "strategy": "shadow-then-canary",
            "shadow": {"minSamples": 20, "maxDisagreement": 0.2},
            "canary": {"steps": [50, 100], "stepSeconds": 1},
            "analysis": {
                "minLabeled": 20,
                "maxAccuracyDrop": 0.05,
                "maxP99Ms": 50,
                "maxErrorRate": 0.05,
                "maxInconclusiveSeconds": 30,
            },
        }
        spec_rollout.update(rollout)
        doc = {
            "apiVersion": "driftline.io/v1alpha1",
            "kind": "DynamicModel",
            "metadata": {"name": unique, "namespace": "test"},
            "spec": {
                "model": {"registry": {"trackingUri": mlflow_server.tracking_uri, "name": unique}},
                "features": [{"name": "x1"}, {"name": "x2"}],
                "kafka": {"bootstrapServers": kafka.bootstrap_servers, "partitions": 1},
                "redis": {"url": redis_url},
                "drift": {"onDrift": ["alert", "retrain", "rollback"]},
                "rollout": spec_rollout,
                **({"monitoring": monitoring} if monitoring else {}),
            },
        }
        path = tmp_path / "model.yaml"
        path.write_text(yaml.safe_dump(doc))
        model = load_dynamic_model(path)
        ensure_topics(KafkaConnection(kafka.bootstrap_servers), [model.topics.control], 1)
        return model

    return make


@pytest.fixture
def registry(mlflow_server: MlflowServer, unique: str) -> Any:
    """An MLflow client; model `unique` has versions 1, 2 and 3, champion = 1."""
    from mlflow import MlflowClient

    client = MlflowClient(
        tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri
    )
    client.create_registered_model(unique)
    run = client.create_run(experiment_id="0")  # the driver never loads the artifacts
    for _ in range(3):
        client.create_model_version(
            unique, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    client.set_registered_model_alias(unique, ALIAS_CHAMPION, "1")
    return client


@pytest.fixture
def producer(kafka: KafkaBroker) -> Iterator[Any]:
    p = make_producer(KafkaConnection(kafka.bootstrap_servers))
    yield p
    p.flush(10)
