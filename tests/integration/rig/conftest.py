"""Fixtures for the proofs that the test rig is real: a dynamic client and a
dedicated Apache Kafka broker the restart test may stop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.dynamic import DynamicClient

from driftline_testing.apache_kafka import ApacheKafkaBroker
from driftline_testing.rig import RigLayout


@pytest.fixture(scope="session")
def dyn(kube_client: Any, tmp_path_factory: pytest.TempPathFactory) -> DynamicClient:
    """The official client's dynamic API: any kind, CRDs included."""
    cache = tmp_path_factory.mktemp("discovery") / "discovery.json"
    return DynamicClient(kube_client, cache_file=str(cache))


@pytest.fixture(scope="module")
def apache_broker(
    rig: RigLayout, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApacheKafkaBroker]:
    """An Apache Kafka broker of this module's own: the restart test stops it."""
    root = tmp_path_factory.mktemp("apache-kafka")
    broker = ApacheKafkaBroker(data_dir=root / "data", log_path=root / "kafka.log", layout=rig)
    with broker:
        yield broker
