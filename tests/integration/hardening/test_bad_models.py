"""Bad candidates through the real canary: aborted within the analysis budget, rolled back.

Builds on `tests/integration/rollout/test_driver.py` (the driver aborts a candidate
on counters the test writes into Redis), `tests/integration/inference/test_serving.py`
(a version whose artifact does not match its sha256 never serves) and the demo's
bad-candidate scenario (`driftline demo`, an inverted candidate, ~1.5 min per run).

Here every counter is real and one set of servers judges five candidates in turn:
the inference server (uvicorn on loopback) serves the traffic of the local runtime's
`TrafficGenerator` and writes the serving counters, the joiner joins the outcomes and
writes the live quality, and the rollout driver (the state machine and its MLflow
and Redis effects) ticks here. The stable version is a model that is exact on the
SEA stream, so each broken candidate is aborted for its fault alone:

- NaN answers -> failed requests -> `error_rate` fails;
- a graph that raises on the batch sizes traffic brings -> `error_rate` fails;
- a graph >= 10x slower than the stable version's served p99 -> `p99_ms` fails;
- an artifact whose sha256 does not match its tag -> never loads, the canary gets no
  evidence -> inconclusive until the budget runs out;
- the control: the stable model itself as a candidate is promoted by the same harness.

The sha256 check holds for every reader of a model file: inference re-checks a file
already downloaded (replaced on disk, it is refused), and the trainer refuses a
champion whose artifact does not match its tag before it continues training from it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.api import DynamicModel, parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION, INPUT_NUMERIC, MODEL_ARTIFACT
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_producer
from driftline.common.redis_state import RoutingStore, ServingStore
from driftline.common.streams import SEAStream
from driftline.inference.contract import FeatureContract
from driftline.inference.onnx_session import CPU, OnnxModel, available_cpus
from driftline.joiner.settings import JoinerSettings
from driftline.joiner.worker import JoinerWorker
from driftline.local.faults import fails_at_run_time, nan_answers, register_candidate, slowed
from driftline.local.servers import MlflowServer, RedisServer
from driftline.local.servers.kafka import KafkaBroker
from driftline.local.traffic import TrafficGenerator
from driftline.rollout.driver import RolloutDriver
from driftline.rollout.policy import Policy
from driftline.rollout.registry import ModelRegistry
from driftline_testing.models import model_document, register_version, write_model_file
from driftline_testing.outcomes import KafkaOutcomes
from tests.integration.inference.harness import Running, wait_until

pytestmark = pytest.mark.integration

SEA_CONCEPT = 2  # theta 7: label 1 when x1 + x2 <= 7
WARM_ROWS = 32  # the batch size the loader warms a version up with
STEP_SECONDS = 1.0
BUDGET_SECONDS = 8.0  # maxInconclusiveSeconds


def sea_model(theta: float) -> bytes:
    """A classifier that is exact on a SEA concept: class 1 when x1 + x2 <= theta."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.array([[10, -10], [10, -10], [0, 0]], np.float32)
    bias = np.array([-10 * theta, 10 * theta], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", [INPUT_NUMERIC, "w", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "sea-exact",
        [helper.make_tensor_value_info(INPUT_NUMERIC, TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


class Traffic:
    """The local runtime's traffic generator on its own event loop, in a thread."""

    def __init__(self, generator: TrafficGenerator) -> None:
        self.generator = generator
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(generator.run(),), daemon=True
        )
        self.thread.start()

    def errors_since(self, second: int) -> tuple[int, int]:
        """(requests sent, errors seen) from run-second `second` on."""
        seconds = [s for k, s in list(self.generator.log.seconds.items()) if k >= second]
        return sum(s.sent for s in seconds), sum(s.errors for s in seconds)

    def now(self) -> int:
        return int(time.time() - self.generator.log.start)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.generator.stop)
        self.thread.join(30)
        self.loop.close()


@dataclass
class Outcome:
    fault: str
    version: str
    stage: str
    reason: str
    seconds: float
    sent: int
    errors: int


@dataclass
class Loop:
    """Inference, joiner, rollout driver and traffic, on the session's real servers."""

    model: DynamicModel
    served: Running
    traffic: Traffic
    redis: Any
    tracking_uri: str
    driver: RolloutDriver | None = None

    @property
    def name(self) -> str:
        return self.model.name

    def judge(self, fault: str, data: bytes, sha256: str | None = None) -> Outcome:
        """Register a candidate and tick the driver until it is decided."""
        since, started = self.traffic.now(), time.monotonic()
        version = register_candidate(self.tracking_uri, self.name, data, fault, sha256)
        driver = self.driver
        assert driver is not None
        deadline = started + STEP_SECONDS + BUDGET_SECONDS + 20
        while time.monotonic() < deadline:
            driver.tick()
            state = driver.state
            assert state is not None
            if version in state.decided and state.stage in ("aborted", "promoted"):
                sent, errors = self.traffic.errors_since(since)
                return Outcome(
                    fault,
                    version,
                    state.stage,
                    state.reason,
                    time.monotonic() - started,
                    sent,
                    errors,
                )
            time.sleep(0.2)
        raise AssertionError(f"{fault}: version {version} not decided; {self.driver.state}")

    def aliases(self) -> dict[str, str]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        return {a: str(v) for a, v in client.get_registered_model(self.name).aliases.items()}

    def routing(self) -> Any:
        return RoutingStore(self.model.metadata.namespace, self.name).read(self.redis)


@pytest.fixture
def loop(
    tmp_path: Path,
    unique: str,
    kafka: KafkaBroker,
    redis_server: RedisServer,
    redis_client: Any,
    mlflow_server: MlflowServer,
    serving: Callable[..., Running],
) -> Iterator[Loop]:
    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        inference={"batching": {"maxBatchSize": WARM_ROWS, "maxDelayMs": 1}, "baseline": False},
    )
    doc["spec"]["feedback"] = {"joinWindowSeconds": 60}
    path = write_model_file(tmp_path / "model.yaml", doc)
    model = parse_dynamic_model(doc)
    connection = KafkaConnection(kafka.bootstrap_servers)
    topics = model.topics
    ensure_topics(connection, [topics.predictions, topics.outcomes, topics.labeled], 1)
    register_version(mlflow_server.tracking_uri, unique, sea_model(7.0), aliases=[ALIAS_CHAMPION])

    served = serving(doc)
    joiner = JoinerWorker(
        JoinerSettings(model_file=path, metrics_port=0, sweep_interval_seconds=0.5)
    )
    stop_joiner = threading.Event()
    joiner_thread = threading.Thread(target=joiner.run, args=(stop_joiner,), daemon=True)
    joiner_thread.start()
    producer = make_producer(connection)
    traffic = Traffic(
        TrafficGenerator(
            inference_url=served.url,
            model_name=unique,
            stream=SEAStream(seed=3, schedule=[(0, SEA_CONCEPT)]),
            outcomes=KafkaOutcomes(producer, topics.outcomes),
            rate=120,
            outcome_delay=0.2,
        )
    )
    try:
        wait_until(lambda: joiner.heartbeat.ready, 60, "the joiner to be ready")
        yield Loop(model, served, traffic, redis_client, mlflow_server.tracking_uri)
    finally:
        traffic.stop()
        stop_joiner.set()
        joiner_thread.join(30)
        producer.flush(10)


def stable_p99_ms(loop: Loop, version: str, requests: int = 200) -> float:
    store = ServingStore(loop.model.metadata.namespace, loop.name)
    stats = wait_until(
        lambda: (s := store.read(loop.redis, version, "stable", 60)).requests >= requests and s,
        30,
        "the stable version's served latency",
    )
    p99 = stats.quantile_ms(0.99)
    assert p99 is not None
    return float(p99)


def slow_enough(
    healthy: bytes, contract: FeatureContract, seconds: float, folder: Path
) -> tuple[bytes, float]:
    """`slowed(healthy)` with enough work that one run takes at least `seconds` here."""
    matmuls = 20
    while True:
        data = slowed(healthy, matmuls=matmuls)
        path = folder / f"slow-{matmuls}.onnx"
        path.write_bytes(data)
        took = OnnxModel(path, contract, [CPU], threads=available_cpus()).time_batch(1)
        if took >= seconds or matmuls >= 5000:
            return data, took
        matmuls = math.ceil(matmuls * min(10.0, 1.3 * seconds / took))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_broken_candidates_are_aborted_and_rolled_back_a_sound_one_promoted(
    loop: Loop, tmp_path: Path
) -> None:
    healthy = sea_model(7.0)
    contract = FeatureContract(loop.model.spec)
    p99 = stable_p99_ms(loop, "1")
    limit = max(20.0, 4 * p99)
    slow, run_seconds = slow_enough(healthy, contract, max(10 * p99, 2 * limit) / 1000, tmp_path)
    assert run_seconds * 1000 >= 10 * p99, "the slowed model is not 10x slower"
    policy = Policy(
        model=loop.name,
        strategy="canary",
        steps=(50, 100),
        step_seconds=STEP_SECONDS,
        min_labeled=20,
        max_quality_drop=0.1,
        max_p99_ms=limit,
        max_error_rate=0.05,
        max_inconclusive_seconds=BUDGET_SECONDS,
    )
    registry = ModelRegistry(loop.tracking_uri, loop.name)
    producer = make_producer(KafkaConnection(loop.model.spec.kafka.bootstrap_servers))
    loop.driver = RolloutDriver(loop.model, loop.redis, registry, producer, policy=policy)
    loop.driver.tick()

    candidates = [
        ("NaN answers", nan_answers(healthy), None, "error rate"),
        ("raises at run time", fails_at_run_time(healthy, WARM_ROWS), None, "error rate"),
        ("10x slower", slow, None, "p99"),
        ("sha256 mismatch", healthy, "0" * 64, "inconclusive"),
    ]
    outcomes = []
    for fault, data, sha256, because in candidates:
        outcome = loop.judge(fault, data, sha256)
        outcomes.append(outcome)
        assert outcome.stage == "aborted", outcome
        assert because in outcome.reason, outcome
        assert outcome.seconds <= STEP_SECONDS + BUDGET_SECONDS + 5, outcome
        # Rolled back: all traffic to the stable version, the aliases as before.
        table = loop.routing()
        assert (table.stable, table.candidate, table.mode) == ("1", None, "stable")
        assert loop.aliases() == {ALIAS_CHAMPION: "1"}
        wait_until(
            lambda: loop.served.server.service.pool.state.table.mode == "stable",
            10,
            "inference to serve the stable version alone",
        )
    tampered = outcomes[-1].version
    assert "sha256" in loop.served.server.service.pool.failures[tampered].error

    sound = loop.judge("none (control)", healthy)
    outcomes.append(sound)
    assert sound.stage == "promoted", sound
    assert loop.aliases() == {ALIAS_CHAMPION: sound.version}
    assert loop.routing().stable == sound.version
    loop.driver.close()

    print(
        f"\nbad candidates through the canary (stable p99 {p99:g} ms, p99 limit {limit:g} ms, "
        f"slowed run {run_seconds * 1000:.0f} ms):"
    )
    for o in outcomes:
        print(
            f"  {o.fault:20s} v{o.version}: {o.stage:8s} after {o.seconds:4.1f}s; "
            f"{o.errors}/{o.sent} requests failed meanwhile; {o.reason[:90]}"
        )


def test_every_reader_of_a_model_file_checks_its_sha256(
    mlflow_server: MlflowServer, unique: str, tmp_path: Path
) -> None:
    from driftline.common.registry import ArtifactMismatchError
    from driftline.inference.errors import ModelLoadError
    from driftline.inference.loader import Registry
    from driftline.trainer.versions import ModelVersions

    good = sea_model(7.0)
    version = register_version(mlflow_server.tracking_uri, unique, good, aliases=[ALIAS_CHAMPION])
    # Inference: a file replaced in the local model directory after its download.
    registry = Registry(mlflow_server.tracking_uri, unique, str(tmp_path / "models"))
    artifact = registry.fetch(version)
    artifact.path.write_bytes(sea_model(9.5))
    with pytest.raises(ModelLoadError, match="sha256"):
        registry.fetch(version)
    assert registry.fetch(version).path.read_bytes() == good  # fetched afresh, verified

    # The trainer: a champion whose registered hash does not match its artifact.
    tampered = register_version(
        mlflow_server.tracking_uri,
        unique,
        sea_model(9.5),
        aliases=[ALIAS_CHAMPION],
        sha256="0" * 64,
    )
    versions = ModelVersions(mlflow_server.tracking_uri, unique)
    champion = versions.by_alias(ALIAS_CHAMPION)
    assert champion is not None and champion.version == tampered
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        versions.download(champion, MODEL_ARTIFACT)
