"""`strategy: adapter` end to end on a real MLflow: import, resume, gate, publish.

A scikit-learn pipeline (scaler, one-hot, logistic regression) saved with skops is
imported with a labelled sample; the trainer resumes an adapter on it that answers as
the import does, learns a changed labelling rule, passes the gate against the import
and publishes one merged graph, which a fresh ONNX Runtime session scores.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftline.api import artifacts
from driftline.local.servers import MlflowServer
from driftline.trainer import export
from driftline.trainer.adapter import TAG_ADAPTER_BASE, AdapterLearner
from driftline.trainer.model_import import import_model
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import ModelVersions
from driftline.trainer.worker import TrainerWorker
from driftline_testing.models import model_document, write_model_file

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_logging")]

NUMERIC = ("a", "b", "c", "d")
COLORS = ("red", "green", "blue")


def data(n: int, seed: int, red: float) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    """`red` is what being red adds to the logit: the labelling rule that changes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [1.0, 3.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]
    color = rng.choice(COLORS, n)
    frame = pd.DataFrame(x, columns=list(NUMERIC)).assign(color=color)
    logit = x[:, 0] - 0.3 * (x[:, 1] - 5) + (color == "red") * red
    return frame, (logit + rng.normal(scale=0.3, size=n) > 0).astype(np.int64)


def test_an_adapter_learns_on_the_import_and_publishes_one_graph(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str
) -> None:
    frame, labels = data(800, seed=0, red=1.5)
    pipe = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("scale", StandardScaler(), list(NUMERIC)),
                        ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, labels)
    model = tmp_path / "pipeline.skops"
    sio.dump(pipe, model)
    sample = tmp_path / "sample.csv"
    with sample.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*frame.columns, "label"])
        for row, label in zip(frame.itertuples(index=False), labels, strict=True):
            writer.writerow([*row, int(label)])
    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        numeric=NUMERIC,
        categorical=("color",),
    )
    doc["spec"]["model"]["strategy"] = "adapter"
    doc["spec"]["training"] = {"batchSize": 64}
    settings = TrainerSettings(
        model_file=write_model_file(tmp_path / "model.yaml", doc),
        checkpoint_dir=tmp_path / "state",
        metrics_port=0,
    )

    done = import_model(settings, model, sample)
    assert done.version == "1" and done.training_state.startswith("adapter (the identity)")
    versions = ModelVersions(settings.connections.mlflow_tracking_uri, unique)
    imported = versions.by_alias(artifacts.ALIAS_BASELINE)
    assert imported is not None
    import_graph = export.session(versions.download(imported, artifacts.MODEL_ARTIFACT))

    worker = TrainerWorker(settings)
    learner = worker.resume()
    assert isinstance(learner, AdapterLearner) and learner.seq == 800
    assert learner.base.version == "1"
    layout = learner.layout

    def rows(n: int, seed: int, red: float, start: int) -> Any:
        frame, labels = data(n, seed, red)
        numeric = frame[list(NUMERIC)].to_numpy(np.float32)
        categorical = frame[["color"]].to_numpy(object)
        key = np.arange(start, start + n)
        return learner.examples(numeric, categorical, labels.astype(np.float32), key)

    # Before any step the adapter's graph is the import's.
    before = rows(500, 1, 1.5, 10_000)
    merged = export.session(learner.export(2))
    assert (
        np.max(
            np.abs(
                export.run_onnx(merged, before, layout, "classification")
                - export.run_onnx(import_graph, before, layout, "classification")
            )
        )
        <= 1e-6
    )

    # Red now counts against: learn it, and the adapter must beat the import on the gate.
    for i in range(6):
        learner.learn(rows(500, 10 + i, -2.0, 20_000 + 500 * i))
    decision = worker.publisher.gate(learner)
    assert decision is not None and decision.publish, decision
    staged = worker.publisher.build(
        learner,
        decision.to_json(),
        decision.metrics(),
        {"labeled:0": [0, 2999]},
        "1",
        ["candidate"],
    )
    worker.publisher.stage(staged)
    version = worker.publisher.complete(staged.key)
    info = versions.by_alias(artifacts.ALIAS_CANDIDATE)
    assert info is not None and info.version == version == "2"
    # Nothing left in staging; a restart whose checkpoint still names the key (stopped
    # after registering, before the checkpoint) finds the version it registered.
    assert list(worker.publisher.staging.iterdir()) == []
    assert worker.publisher.complete(staged.key) == "2"
    assert info.tags["driftline.learner"] == "adapter" and info.tags[TAG_ADAPTER_BASE] == "1"
    assert float(info.tags["driftline.parity_max_abs_diff"]) <= 1e-5

    after = rows(1000, 99, -2.0, 40_000)
    published = export.session(versions.download(info, artifacts.MODEL_ARTIFACT))
    ours = export.run_onnx(published, after, layout, "classification")
    theirs = export.run_onnx(import_graph, after, layout, "classification")
    assert (
        np.mean(ours.argmax(1) == after.labels) > np.mean(theirs.argmax(1) == after.labels) + 0.05
    )
