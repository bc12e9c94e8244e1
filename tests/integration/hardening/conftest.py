"""Fixtures of the hardening tests: a real inference server on loopback.

`serving(doc)` runs the inference app in a thread, as `python -m driftline.inference`
does, against the session's real Kafka, Redis and MLflow (the inference part's own
harness, `tests/integration/inference/harness.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from driftline.api import parse_dynamic_model
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer
from driftline.local.servers.kafka import KafkaBroker
from driftline_testing.models import model_document
from tests.integration.inference.harness import Running, servers


@pytest.fixture
def model_doc(
    unique: str, mlflow_server: MlflowServer, redis_server: RedisServer, kafka: KafkaBroker
) -> dict[str, Any]:
    """A model with numeric and categorical features, served from the test servers."""
    return model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        categorical=("channel",),
        inference={"batching": {"maxBatchSize": 32, "maxDelayMs": 1}, "baseline": False},
    )


@pytest.fixture
def contract(model_doc: dict[str, Any]) -> FeatureContract:
    return FeatureContract(parse_dynamic_model(model_doc).spec)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """serving(doc, **settings) -> a server with a loaded model (stopped afterwards)."""
    with servers(tmp_path) as start:
        yield start
