"""Real servers for the tests, one of each per test session, all on loopback.

`kafka` is "a Kafka broker": Apache Kafka when the test rig is built, else the
embedded Tansu broker (`DRIFTLINE_KAFKA=tansu|apache|auto` chooses). `redis_server`
and `mlflow_server` are real redis-server and `mlflow server` processes. `kube` is
a real Kubernetes control plane from the test rig (`make rig`) with simulated CPU
and GPU nodes; `kube_client` and `kube_namespace` talk to it. Every one is stopped
at the end of the session, also when tests fail or are interrupted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.local.servers import KafkaBroker, MlflowServer, RedisServer
from driftline_testing import kube as kube_infra
from driftline_testing import node as node_infra
from driftline_testing import start_kafka
from driftline_testing.rig import RigLayout, rig_layout

os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "manifests" / "samples"


@pytest.fixture(scope="session")
def infra_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra-logs")


@pytest.fixture(scope="session")
def kafka(infra_logs: Path) -> Iterator[KafkaBroker]:
    broker = start_kafka(log_dir=infra_logs)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def redis_server(infra_logs: Path) -> Iterator[RedisServer]:
    with RedisServer(log_path=infra_logs / "redis.log") as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[object]:
    """A client on a clean database for each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, infra_logs: Path
) -> Iterator[MlflowServer]:
    with MlflowServer(
        root=tmp_path_factory.mktemp("mlflow"), log_path=infra_logs / "mlflow.log"
    ) as server:
        yield server


@pytest.fixture
def unique() -> str:
    """A short unique name for topics, groups and registered models of one test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def rig() -> RigLayout:
    """The built test rig (real Kubernetes control plane, Apache Kafka).

    A missing rig fails the tests that need it (`make test` builds it first);
    `DRIFTLINE_RIG=off` skips them instead, and says so in the summary.
    """
    if os.environ.get("DRIFTLINE_RIG", "").lower() == "off":
        pytest.skip("DRIFTLINE_RIG=off: the test rig is not used")
    layout = rig_layout()
    if not (layout.kubernetes_built and layout.kafka_built):
        pytest.fail("the test rig is not built: run `make rig` (`make test` builds it first)")
    return layout


@pytest.fixture(scope="session")
def kube(rig: RigLayout, infra_logs: Path) -> Iterator[kube_infra.ControlPlane]:
    """The test rig's control plane: etcd, kube-apiserver, controller-manager,
    scheduler and kwok nodes (pools `cpu` and `gpu`). One per session."""
    with kube_infra.ControlPlane(log_dir=infra_logs / "kube", layout=rig) as plane:
        yield plane


@pytest.fixture(scope="session")
def real_node(rig: RigLayout, infra_logs: Path) -> Iterator[node_infra.NodeStack]:
    """A control plane of its own with one real node (containerd, kubelet,
    kube-proxy) in a network namespace of the rig's: Pods really run. Opt-in, and
    apart from `kube`, whose simulated nodes stay as they are. One per session;
    at its end nothing of it may be left (processes, mounts, cgroups, network)."""
    missing = node_infra.missing_parts(rig)
    if missing:
        pytest.fail(f"the real node needs {', '.join(missing)}: see tests/rig/README.md")
    stack = node_infra.NodeStack(log_dir=infra_logs / "real-node", layout=rig)
    with stack:
        yield stack
    left = stack.leftovers()
    if left:
        pytest.fail(f"the real node left {left}")


@pytest.fixture(scope="session")
def kube_client(kube: kube_infra.ControlPlane) -> Iterator[object]:
    """A `kubernetes.client.ApiClient` authenticated as the rig's admin."""
    client = kube.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kube_namespace(kube: kube_infra.ControlPlane, unique: str) -> Iterator[str]:
    """A fresh namespace with its default service account, deleted after the test."""
    kube.create_namespace(unique)
    try:
        yield unique
    finally:
        kube.delete_namespace(unique)
