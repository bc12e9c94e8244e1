"""The operator's timer drives a rollout through its stages, against real Redis, MLflow
and Kafka: shadow, canary steps, promotion; aliases moved, status and events mirrored."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from driftline.api.events import RolloutEvent, decode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_consumer
from driftline.common.redis_state import QualityStore, ServingStore, latency_bucket
from driftline.local.servers import KafkaBroker, MlflowServer, RedisServer

from .plane import ControlPlane, model_manifest, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def register_versions(tracking_uri: str, name: str) -> tuple[str, str]:
    """Two versions: `champion` on the first, `candidate` (the trainer's) on the second."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.create_registered_model(name)
    experiment = client.create_experiment(name)
    versions = []
    for _ in range(2):
        run = client.create_run(experiment)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(
            name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        versions.append(str(mv.version))
    client.set_registered_model_alias(name, "champion", versions[0])
    client.set_registered_model_alias(name, "candidate", versions[1])
    return versions[0], versions[1]


class Traffic:
    """Stands in for inference and the joiner: both versions answer well and agree."""

    def __init__(self, redis_url: str, ns: str, name: str, stable: str, candidate: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.quality = QualityStore(ns, name)
        self.serving = ServingStore(ns, name)
        self.stable, self.candidate = stable, candidate
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        fast = {f"le_{latency_bucket(4.0)}": 10.0, "requests": 10.0}
        good = {"count": 10.0, "correct": 9.0}
        while not self.stop.wait(0.25):
            pipe = self.client.pipeline(transaction=False)
            self.quality.counters(self.stable, "stable").add(pipe, good)
            self.serving.counters(self.stable, "stable").add(pipe, fast)
            for variant in ("shadow", "candidate"):
                self.quality.counters(self.candidate, variant).add(pipe, good)
                self.serving.counters(self.candidate, variant).add(pipe, fast)
            self.quality.agreement(self.stable, self.candidate).add(
                pipe, {"compared": 10.0, "agreed": 10.0}
            )
            pipe.execute()

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()


@pytest.fixture
def rollout_model(
    ns: str, unique: str, redis_server: RedisServer, mlflow_server: MlflowServer, kafka: KafkaBroker
) -> tuple[dict[str, Any], str, str]:
    stable, candidate = register_versions(mlflow_server.tracking_uri, unique)
    # The parts create the model's topics; here nothing else would.
    ensure_topics(KafkaConnection(kafka.bootstrap_servers), [f"{unique}.control"], partitions=1)
    manifest = model_manifest(
        unique,
        ns,
        model={"registry": {"trackingUri": mlflow_server.tracking_uri, "name": unique}},
        kafka={"bootstrapServers": kafka.bootstrap_servers, "partitions": 1},
        redis={"url": redis_server.url},
        rollout={
            "strategy": "shadow-then-canary",
            "shadow": {"minSamples": 20, "maxDisagreement": 0.2},
            "canary": {"steps": [50, 100], "stepSeconds": 2},
            "analysis": {
                "minLabeled": 20,
                "maxAccuracyDrop": 0.05,
                "maxP99Ms": 100,
                "maxErrorRate": 0.05,
                "maxInconclusiveSeconds": 120,
            },
        },
    )
    return manifest, stable, candidate


def test_the_timer_moves_a_rollout_through_its_stages(
    control_plane: ControlPlane,
    ns: str,
    rollout_model: tuple[dict[str, Any], str, str],
    redis_server: RedisServer,
    mlflow_server: MlflowServer,
    kafka: KafkaBroker,
) -> None:
    manifest, stable, candidate = rollout_model
    name = manifest["metadata"]["name"]
    control_plane.create_model(manifest)
    seen: list[tuple[str, int]] = []

    def promoted() -> dict[str, Any] | None:
        status = control_plane.status(ns, name)
        rollout = status.get("rollout", {})
        step = (rollout.get("stage", "idle"), rollout.get("weight", 0))
        if not seen or seen[-1] != step:
            seen.append(step)
        return status if status.get("stableVersion") == candidate else None

    with Traffic(redis_server.url, ns, name, stable, candidate), control_plane.operator(ns):
        status = wait_for(promoted, 180, "the candidate to be promoted", interval=0.1)

    stages = [stage for stage, _ in seen]
    assert "shadow" in stages and ("canary", 50) in seen and stages[-1] == "promoted", seen
    assert stages.index("shadow") < stages.index("canary") < stages.index("promoted")
    assert status["rollout"]["stage"] == "promoted"
    assert status.get("candidateVersion") is None
    assert status["rollout"]["lastAnalysis"]["verdict"] == "pass"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    assert client.get_model_version_by_alias(name, "champion").version == candidate

    # Each transition went to the control topic as a RolloutEvent.
    consumer = make_consumer(
        KafkaConnection(kafka.bootstrap_servers),
        group_id=f"{name}-check",
        **{"auto.offset.reset": "earliest"},
    )
    consumer.subscribe([f"{name}.control"])
    events: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while "promoted" not in events and time.monotonic() < deadline:
            for message in consumer.consume(100, 1.0):
                if message.error() is None:
                    events.append(decode(message.value(), RolloutEvent).stage)
    finally:
        consumer.close()
    assert "shadow" in events and events[-1] == "promoted", events


def test_a_manual_rollout_is_approved_and_another_aborted_by_annotation(
    control_plane: ControlPlane,
    ns: str,
    rollout_model: tuple[dict[str, Any], str, str],
    redis_server: RedisServer,
) -> None:
    """`kubectl annotate dynamicmodel <name> driftline.io/rollout=approve`: no Redis write
    by the person. Each approval moves a `manual` rollout one stage; the operator takes
    the annotation away once handed over. An abort names its version and reason."""
    manifest, stable, candidate = rollout_model
    name = manifest["metadata"]["name"]
    manifest["spec"]["rollout"]["strategy"] = "manual"
    control_plane.create_model(manifest)

    def stage() -> str:
        return str(control_plane.status(ns, name).get("rollout", {}).get("stage", "idle"))

    def annotations() -> dict[str, str]:
        return (control_plane.model(ns, name) or {})["metadata"].get("annotations") or {}

    def waiting() -> bool:
        return "waiting for approval" in control_plane.status(ns, name).get("rollout", {}).get(
            "reason", ""
        )

    def annotate(value: str, reason: str | None = None) -> None:
        patch = {"driftline.io/rollout": value}
        if reason is not None:
            patch["driftline.io/rollout-reason"] = reason
        control_plane.patch_model(ns, name, {"metadata": {"annotations": patch}})

    patch_keys = ("driftline.io/rollout", "driftline.io/rollout-reason")
    with Traffic(redis_server.url, ns, name, stable, candidate), control_plane.operator(ns):
        wait_for(lambda: stage() == "shadow" and waiting(), 120, "shadow passed, held")
        annotate("approve")
        wait_for(lambda: stage() == "canary", 60, "approved: canary")
        wait_for(lambda: "driftline.io/rollout" not in annotations(), 30, "the annotation taken")
        # Approvals move one stage at a time: the canary waits for the next one.
        wait_for(waiting, 60, "canary passed, held")
        assert stage() == "canary"
        annotate(f"abort:{candidate}", "the EU nodes' p99 is too high")
        wait_for(lambda: stage() == "aborted", 60, "aborted by annotation")
        status = control_plane.status(ns, name)
        wait_for(lambda: not set(annotations()) & set(patch_keys), 30, "both annotations taken")
    assert "the EU nodes' p99 is too high" in status["rollout"]["reason"]
    assert status["stableVersion"] == stable
