"""`driftline up` brings real servers and the model's topics; `validate` names problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.common.connections import KafkaConnection
from driftline.local.cli import main
from driftline.local.runtime import RUNTIME_FILE, LocalRuntime

REPO = Path(__file__).resolve().parents[3]
SEA = REPO / "manifests" / "samples" / "sea-demo.yaml"

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_servers_and_topics_come_up_and_go_down(tmp_path: Path) -> None:
    runtime = LocalRuntime(SEA, state_dir=tmp_path / "run", parts=["inference"])
    endpoints = runtime.start_servers()
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(KafkaConnection(endpoints.kafka_bootstrap_servers).client_config())
        topics = admin.list_topics(timeout=10).topics
        for name in ("sea.predictions", "sea.outcomes", "sea.labeled", "sea.control"):
            assert name in topics
            assert len(topics[name].partitions) == 2  # spec.kafka.partitions
        import redis

        assert redis.Redis.from_url(endpoints.redis_url).ping()
    finally:
        runtime.stop()
    assert not (tmp_path / "run" / RUNTIME_FILE).exists()


def test_validate_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(SEA)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEA.read_text().replace("batchSize: 128", "batchSize: 0"))
    assert main(["validate", "-f", str(bad)]) == 2
    assert "spec.training.batchSize" in capsys.readouterr().err


@pytest.mark.slow
def test_up_imports_the_initial_model_once(tmp_path: Path, unique: str) -> None:
    """`spec.model.initial` with a path beside the YAML: imported before the parts start,
    and not again once the run has a champion."""
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    from driftline.api.artifacts import ALIAS_CHAMPION
    from driftline.common.registry import RegisteredModel
    from driftline_testing.models import model_document, write_model_file

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    graph = convert_sklearn(
        clf,
        initial_types=[("x", FloatTensorType([None, 3]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    (tmp_path / "model.onnx").write_bytes(graph.SerializeToString())
    doc = model_document(unique)
    doc["spec"]["model"]["initial"] = {"uri": "model.onnx"}
    model_file = write_model_file(tmp_path / "model.yaml", doc)

    # The import runs the code under test, also from a checkout on PYTHONPATH.
    import os

    path = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    runtime = LocalRuntime(
        model_file, state_dir=tmp_path / "run", parts=["inference"], environment=path
    )
    endpoints = runtime.start_servers()
    try:
        assert runtime.import_initial() == "1"
        log = (tmp_path / "run" / "logs" / "import.log").read_text()
        assert "imported model.onnx (onnx)" in log
        assert runtime.import_initial() == "1"  # a champion exists: nothing imported
        assert "nothing imported" in (tmp_path / "run" / "logs" / "import.log").read_text()
        champion = RegisteredModel(endpoints.mlflow_tracking_uri, unique).version_for_alias(
            ALIAS_CHAMPION
        )
        assert champion is not None and champion.version == "1"
    finally:
        runtime.stop()


@pytest.mark.slow
def test_up_runs_scheduled_retrains_from_its_timer(tmp_path: Path) -> None:
    """`training.mode: scheduled`: no trainer process; the timer runs the retrain command,
    which publishes a candidate from the labeled topic."""
    import os
    import time

    import yaml
    from confluent_kafka import Producer

    from driftline.api.artifacts import ALIAS_CANDIDATE
    from driftline.api.events import LabeledExample, encode
    from driftline.common.registry import RegisteredModel
    from driftline.common.streams import SEAStream
    from driftline.local.runtime import bootstrap_from_stream
    from tests import polling

    doc = yaml.safe_load(SEA.read_text())
    doc["spec"]["training"] |= {"mode": "scheduled", "scheduleSeconds": 3}
    model_file = tmp_path / "sea.yaml"
    model_file.write_text(yaml.safe_dump(doc))
    path = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    runtime = LocalRuntime(
        model_file, state_dir=tmp_path / "run", parts=["trainer"], environment=path
    )
    endpoints = runtime.start_servers()
    try:
        assert bootstrap_from_stream(runtime, "sea", 0, 3000, 1) == "1"
        producer = Producer({"bootstrap.servers": endpoints.kafka_bootstrap_servers})
        rows = SEAStream(seed=2, schedule=[(0, 2)]).take(3000)  # another concept: a new rule
        now = time.time()
        for i, (features, label) in enumerate(
            zip(rows.features(), rows.labels.tolist(), strict=True)
        ):
            event = LabeledExample(
                request_id=f"r{i}", model="sea", model_version="1", variant="stable",
                features=features, label=float(label), output=0.0,  # type: ignore[arg-type]
                ts_prediction=now, ts_label=now,
            )  # fmt: skip
            producer.produce("sea.labeled", key=event.request_id.encode(), value=encode(event))
        assert producer.flush(30) == 0
        runtime.start_parts()
        assert runtime.part_specs == [] and runtime.retrain_timer is not None
        registry = RegisteredModel(endpoints.mlflow_tracking_uri, "sea")
        candidate = polling.wait_until(
            lambda: registry.version_for_alias(ALIAS_CANDIDATE), 180, "a candidate", interval=1
        )
        assert candidate.tags["driftline.training"] == "scheduled"
        assert candidate.tags["driftline.rows"] == "3000"
        log = (tmp_path / "run" / "logs" / "retrain.log").read_text()
        assert "retrain: published" in log
    finally:
        runtime.stop()
