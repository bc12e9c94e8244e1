"""A trainer against the real broker and MLflow: model files, producers, a running worker."""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from driftline.api.events import DriftEvent, LabeledExample, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_producer
from driftline.common.streams import DriftingStream, Rows
from driftline.local.servers import KafkaBroker, MlflowServer
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.worker import TrainerWorker
from tests import polling

torch.set_num_threads(1)


@dataclass
class TrainerCase:
    """One model of one test: its YAML, settings, and ways to feed it."""

    name: str
    model_file: Path
    settings: TrainerSettings
    conn: KafkaConnection
    producer: Any

    @property
    def topics(self) -> Any:
        return self.settings.model.topics

    def produce(
        self, rows: Rows, served: np.ndarray[Any, Any] | None = None, version: str = "1"
    ) -> None:
        """Labeled examples for `rows`; `served` is what the stable version predicted."""
        outputs = rows.labels if served is None else served
        now = time.time()
        for i, (features, label, output) in enumerate(
            zip(rows.features(), rows.labels.tolist(), outputs.tolist(), strict=True)
        ):
            event = LabeledExample(
                request_id=f"{self.name}-{rows.start + i}",
                model=self.name,
                model_version=version,
                variant="stable",
                features=features,  # type: ignore[arg-type]
                label=float(label),
                output=float(output),
                ts_prediction=now,
                ts_label=now,
            )
            self.producer.produce(
                self.topics.labeled, key=event.request_id.encode(), value=encode(event)
            )
        assert self.producer.flush(30) == 0

    def produce_raw(self, values: list[bytes]) -> None:
        for value in values:
            self.producer.produce(self.topics.labeled, value=value)
        assert self.producer.flush(30) == 0

    def drift(self, kind: str = "concept", window_start: float | None = None) -> None:
        event = DriftEvent(
            event_id=uuid.uuid4().hex,
            model=self.name,
            model_version="1",
            kind=kind,  # type: ignore[arg-type]
            detector="test",
            detected_at=time.time(),
            score=1.0,
            window_start=window_start,
        )
        self.producer.produce(self.topics.control, value=encode(event))
        assert self.producer.flush(30) == 0


CaseFactory = Callable[..., TrainerCase]


@pytest.fixture
def trainer_case(
    kafka: KafkaBroker, mlflow_server: MlflowServer, tmp_path: Path, unique: str
) -> Iterator[CaseFactory]:
    made: list[TrainerCase] = []

    def make(
        stream: DriftingStream,
        training: dict[str, Any] | None = None,
        learner: dict[str, Any] | None = None,
        drift: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        inference: dict[str, Any] | None = None,
        **settings: Any,
    ) -> TrainerCase:
        name = f"{unique}-{len(made)}"
        spec = {
            "apiVersion": "driftline.io/v1alpha1",
            "kind": "DynamicModel",
            "metadata": {"name": name},
            "spec": {
                "model": {
                    "registry": {"trackingUri": mlflow_server.tracking_uri, "name": name},
                    "task": stream.task,
                    "classes": 2,
                    "learner": learner or {"type": "mlp", "hidden": [32, 16]},
                    **(model or {}),
                },
                "features": [
                    f.model_dump(by_alias=True, exclude_none=True, mode="json")
                    for f in stream.contract()
                ],
                "kafka": {"bootstrapServers": kafka.bootstrap_servers, "partitions": 2},
                "redis": {"url": "redis://127.0.0.1:1/0"},
                "training": {
                    "batchSize": 64,
                    "replay": {"capacity": 5000, "fraction": 0.5},
                    "publish": {"everySamples": 2000, "everySeconds": 300},
                    "gate": {"holdoutFraction": 0.1, "maxRegression": 0.01},
                    **(training or {}),
                },
                "drift": drift or {"onDrift": ["alert", "retrain"]},
                **({"inference": inference} if inference else {}),
            },
        }
        model_file = tmp_path / f"{name}.yaml"
        model_file.write_text(yaml.safe_dump(spec))
        checkpoint_dir = tmp_path / f"{name}-state"
        trainer_settings = TrainerSettings(
            model_file=model_file,
            checkpoint_dir=checkpoint_dir,
            metrics_port=0,
            gate_min_holdout=100,
            gate_min_anchor=50,
            checkpoint_seconds=2.0,
            consume_timeout=0.2,
            **settings,
        )
        conn = KafkaConnection(kafka.bootstrap_servers)
        topics = trainer_settings.model.topics
        ensure_topics(
            conn, [topics.labeled, topics.control, topics.dead_letter or ""], partitions=2
        )
        case = TrainerCase(name, model_file, trainer_settings, conn, make_producer(conn))
        made.append(case)
        return case

    yield make
    for case in made:  # producers hold connections until collected: drop them now
        case.producer.flush(5)
        case.producer = None
    made.clear()
    gc.collect()


@contextmanager
def running(worker: TrainerWorker) -> Iterator[TrainerWorker]:
    """The worker's loop in a thread; stopped (checkpoint, commit) on exit."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="trainer", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the trainer did not stop within 60 s"
    if errors:
        # Without its traceback: the worker's frames (and their Kafka clients) can go.
        raise errors[0].with_traceback(None)


def wait_for(condition: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
    return polling.wait_until(condition, timeout, what, interval=0.25)


@pytest.fixture
def run_worker() -> Callable[[TrainerWorker], Any]:
    return running


@pytest.fixture
def until() -> Callable[..., Any]:
    return wait_for


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The trainer's entry point sets the root handler to the (captured) stderr: put it back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
