"""A drift monitor against real Kafka, Redis and MLflow, and the tools to drive it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import REGISTRY

from driftline.api import DynamicModel
from driftline.api.artifacts import ALIAS_CHAMPION, REFERENCE_ARTIFACT
from driftline.api.events import DriftEvent, Event, decode, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_producer
from driftline.drift import metrics
from driftline.drift.settings import DriftSettings
from driftline.drift.worker import DriftWorker
from driftline.local.servers import KafkaBroker, MlflowServer, RedisServer, free_port
from tests import polling
from tests.drift.streams import dynamic_model, reference_arrays
from tests.topics import read_all

wait_for = partial(polling.wait_until, interval=0.1)


class Registry:
    """Registers model versions that carry just a reference sample (no ONNX needed)."""

    def __init__(self, server: MlflowServer, name: str, workdir: Path) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=server.tracking_uri)
        self.name = name
        self.workdir = workdir
        self.client.create_registered_model(name)
        self.experiment = self.client.create_experiment(name)

    def register(self, arrays: dict[str, np.ndarray], champion: bool = False) -> str:
        run = self.client.create_run(self.experiment)
        local = self.workdir / run.info.run_id / Path(REFERENCE_ARTIFACT).name
        local.parent.mkdir(parents=True)
        np.savez(local, **arrays)
        self.client.log_artifact(run.info.run_id, str(local), Path(REFERENCE_ARTIFACT).parent.name)
        self.client.set_terminated(run.info.run_id)
        mv = self.client.create_model_version(
            self.name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        if champion:
            self.client.set_registered_model_alias(self.name, ALIAS_CHAMPION, mv.version)
        return str(mv.version)


class Harness:
    """Topics, a producer, a running monitor (in a thread) and readers of its output."""

    def __init__(
        self, kafka: KafkaBroker, redis: RedisServer, mlflow: MlflowServer, name: str, workdir: Path
    ) -> None:
        self.kafka = KafkaConnection(kafka.bootstrap_servers)
        self.redis_url = redis.url
        self.mlflow = mlflow
        self.name = name
        self.workdir = workdir
        self.registry = Registry(mlflow, name, workdir)
        self.producer = make_producer(self.kafka)
        self.threads: list[tuple[threading.Thread, threading.Event]] = []

    def model(self, name: str | None = None, **drift: Any) -> DynamicModel:
        topics = {
            "predictions": f"{self.name}.predictions",
            "outcomes": f"{self.name}.outcomes",
            "labeled": f"{self.name}.labeled",
            "control": f"{name or self.name}.control",
            "deadLetter": f"{self.name}.dead-letter",
        }
        model = dynamic_model(
            name or self.name,
            drift=drift,
            endpoints={
                "kafka": self.kafka.bootstrap_servers,
                "redis": self.redis_url,
                "mlflow": self.mlflow.tracking_uri,
            },
            topics=topics,
        )
        # Every monitor of this test reads the registered model of the test.
        spec = model.to_manifest()
        spec["spec"]["model"]["registry"]["name"] = self.name
        ensure_topics(self.kafka, list(topics.values()), partitions=1)
        return DynamicModel.model_validate(spec)

    def write(self, model: DynamicModel) -> Path:
        path = self.workdir / f"{model.name}.yaml"
        path.write_text(yaml.safe_dump(model.to_manifest()))
        return path

    def settings(self, model: DynamicModel, **extra: Any) -> DriftSettings:
        return DriftSettings(
            model_file=self.write(model),
            metrics_port=extra.pop("metrics_port", 0),
            reference_refresh_seconds=extra.pop("reference_refresh_seconds", 1.0),
            threshold_cache_dir=self.workdir / "thresholds",
            poll_seconds=0.2,
            **extra,
        )

    def start(self, settings: DriftSettings) -> DriftWorker:
        worker = DriftWorker(settings)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        self.threads.append((thread, stop))
        wait_for(lambda: worker.heartbeat.ready, 120, f"{settings.model.name} to be ready")
        return worker

    def send(self, topic: str, events: list[Event] | list[bytes]) -> None:
        for e in events:
            self.producer.produce(topic, value=e if isinstance(e, bytes) else encode(e))
        assert self.producer.flush(15) == 0

    def read(self, topic: str, seconds: float) -> list[Any]:
        """Every record on `topic`: all it holds, then until `seconds` pass with nothing new."""
        return read_all(self.kafka, topic, settle=seconds)

    def events(self, model: DynamicModel, seconds: float = 6.0) -> list[DriftEvent]:
        return [decode(m.value(), DriftEvent) for m in self.read(model.topics.control, seconds)]

    def used(self, model: str, stream: str) -> float:
        return (
            REGISTRY.get_sample_value(metrics.SAMPLES_TOTAL, {"model": model, "stream": stream})
            or 0.0
        )

    def stop(self) -> None:
        for _, stop in self.threads:
            stop.set()
        for thread, _ in self.threads:
            thread.join(30)
            assert not thread.is_alive(), "the monitor did not stop"
        self.producer.flush(5)
        del self.producer  # no client left retrying a broker that the session stops


@pytest.fixture
def harness(
    kafka: KafkaBroker,
    redis_server: RedisServer,
    mlflow_server: MlflowServer,
    unique: str,
    tmp_path: Path,
) -> Iterator[Harness]:
    h = Harness(kafka, redis_server, mlflow_server, unique, tmp_path)
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def calm_reference() -> dict[str, np.ndarray]:
    return reference_arrays(np.random.default_rng(0), n=2000)


__all__ = ["Harness", "free_port", "wait_for"]
