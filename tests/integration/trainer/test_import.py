"""Bringing a model made elsewhere: ONNX as it is, a skops pipeline, refusals.

Real scikit-learn pipelines trained here, converted by skl2onnx, checked by ONNX
Runtime, registered in a real MLflow; then read back by the trainer, the drift
monitor's reference source and a real inference server.
"""

from __future__ import annotations

import csv
import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftline.api import artifacts
from driftline.common.registry import sha256
from driftline.local.servers import MlflowServer
from driftline.trainer import export
from driftline.trainer.__main__ import main as trainer_main
from driftline.trainer.bootstrap import examples_from_rows
from driftline.trainer.model_import import NO_REFERENCE, ModelImportError, import_model
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import STATE_ARTIFACT, ModelVersions
from driftline.trainer.worker import TrainerWorker
from driftline_testing.models import model_document, write_model_file

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_logging")]

NUMERIC = ("a", "b", "c", "d")
COLORS = ("red", "green", "blue")


def data(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [1.0, 3.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]
    color = rng.choice(COLORS, n)
    frame = pd.DataFrame(x, columns=list(NUMERIC)).assign(color=color)
    logit = x[:, 0] - 0.3 * (x[:, 1] - 5) + (color == "red") * 1.5
    return frame, (logit + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)


def write_sample(path: Path, frame: pd.DataFrame, labels: Any | None) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*frame.columns, *(["label"] if labels is not None else [])])
        for i, row in enumerate(frame.itertuples(index=False)):
            writer.writerow([*row, *([int(labels[i])] if labels is not None else [])])
    return path


def settings_for(
    tmp_path: Path, tracking_uri: str, name: str, categorical: tuple[str, ...] = ()
) -> TrainerSettings:
    doc = model_document(name, tracking_uri=tracking_uri, numeric=NUMERIC, categorical=categorical)
    path = write_model_file(tmp_path / f"{name}.yaml", doc)
    return TrainerSettings(model_file=path, checkpoint_dir=tmp_path / "state", metrics_port=0)


def numeric_onnx(tmp_path: Path, frame: pd.DataFrame, labels: Any, width: int = 4) -> Path:
    """StandardScaler + LogisticRegression on arrays, exported by skl2onnx with input 'x'."""
    x = frame[list(NUMERIC)].to_numpy()[:, :width]
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, labels)
    graph = convert_sklearn(
        pipe,
        initial_types=[("x", FloatTensorType([None, width]))],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = tmp_path / f"model{width}.onnx"
    path.write_bytes(graph.SerializeToString())
    return path


def check_registered(settings: TrainerSettings, name: str) -> ModelVersions:
    versions = ModelVersions(settings.connections.mlflow_tracking_uri, name)
    for alias in (artifacts.ALIAS_CHAMPION, artifacts.ALIAS_BASELINE):
        info = versions.by_alias(alias)
        assert info is not None and info.version == "1"
    info = versions.by_alias(artifacts.ALIAS_CHAMPION)
    assert info is not None
    graph = versions.download(info, artifacts.MODEL_ARTIFACT)  # checked against the tag
    assert info.tags[artifacts.TAG_SHA256] == sha256(graph)
    assert info.tags[artifacts.TAG_ORIGIN] == artifacts.ORIGIN_IMPORTED
    assert info.tags[artifacts.TAG_SPEC_HASH]
    assert json.loads(info.tags[artifacts.TAG_GATE])["imported"] is True
    return versions


def test_an_onnx_model_is_imported_as_it_is(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str
) -> None:
    frame, labels = data(600)
    model = numeric_onnx(tmp_path, frame, labels)
    sample = write_sample(tmp_path / "sample.csv", frame[list(NUMERIC)], labels)
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique)

    started = time.perf_counter()
    done = import_model(settings, model, sample)
    print(f"\nimport time, onnx as is: {time.perf_counter() - started:.2f}s")
    assert done.version == "1" and done.parity <= 1e-5 and done.rows == 600
    versions = check_registered(settings, unique)
    info = versions.by_alias(artifacts.ALIAS_CHAMPION)
    assert info is not None
    assert info.tags[artifacts.TAG_TRAINING_STATE] == "sample"
    with np.load(
        __import__("io").BytesIO(versions.download(info, artifacts.REFERENCE_ARTIFACT))
    ) as ref:
        assert set(ref.files) == {*NUMERIC, artifacts.REFERENCE_OUTPUT_KEY}
        assert ref["a"].size == 600
    assert versions.download(info, STATE_ARTIFACT)

    # The same file and sample again: the same version, not a second one.
    assert import_model(settings, model, sample).version == "1"
    # The trainer resumes from the challenger learned on the labelled sample.
    worker = TrainerWorker(settings)
    learner = worker.resume()
    assert worker.progress.parent == "1" and learner.seq > 0


def test_a_skops_pipeline_with_a_categorical_feature(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str
) -> None:
    frame, labels = data(800, seed=1)
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
    path = tmp_path / "pipeline.skops"
    sio.dump(pipe, path)
    sample = write_sample(tmp_path / "sample.csv", frame, None)  # no labels
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique, categorical=("color",))

    started = time.perf_counter()
    done = import_model(settings, path, sample)
    print(f"\nimport time, skops pipeline (scaler, one-hot, logistic): "
          f"{time.perf_counter() - started:.2f}s")  # fmt: skip
    assert done.fmt == "sklearn:skops" and done.parity <= 1e-5
    versions = check_registered(settings, unique)
    info = versions.by_alias(artifacts.ALIAS_CHAMPION)
    assert info is not None and info.tags[artifacts.TAG_TRAINING_STATE] == "none"

    # A champion without training state: the trainer starts a learner beside it.
    worker = TrainerWorker(settings)
    learner = worker.resume()
    assert worker.progress.parent == "1" and learner.seq == 0
    # The gate scores the imported champion on its own registered graph.
    rows = frame.to_dict("records")
    ex = examples_from_rows(learner, rows, labels.astype(np.float32))
    serving, sess = worker.publisher.serving()
    assert serving is not None and serving.version == "1"
    probabilities = export.run_onnx(sess, ex, learner.layout, "classification")
    assert np.mean(probabilities.argmax(axis=1) == labels) > 0.8


def test_a_regression_model(tmp_path: Path, mlflow_server: MlflowServer, unique: str) -> None:
    frame, _ = data(300, seed=2)
    x = frame[list(NUMERIC)].to_numpy()
    reg = LinearRegression().fit(x, x @ [1.0, -2.0, 0.5, 0.01])
    path = tmp_path / "reg.skops"
    sio.dump(reg, path)
    doc = model_document(unique, tracking_uri=mlflow_server.tracking_uri, numeric=NUMERIC,
                         task="regression")  # fmt: skip
    settings = TrainerSettings(
        model_file=write_model_file(tmp_path / "m.yaml", doc), checkpoint_dir=tmp_path / "s"
    )
    done = import_model(
        settings, path, write_sample(tmp_path / "s.csv", frame[list(NUMERIC)], None)
    )
    assert done.parity <= 1e-5


def test_without_a_sample_the_reference_comes_from_live_traffic(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    frame, labels = data(300)
    model = numeric_onnx(tmp_path, frame, labels)
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique)
    code = trainer_main(["--model-file", str(settings.model_file), "import", str(model)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "the drift reference will come from the first live traffic" in out
    assert out.strip().splitlines()[-1] == "1"
    versions = check_registered(settings, unique)
    info = versions.by_alias(artifacts.ALIAS_CHAMPION)
    assert info is not None and info.tags[artifacts.TAG_REFERENCE] == NO_REFERENCE

    # The drift monitor's reference source says it is unavailable (the monitor waits,
    # not ready, and asks again); it does not crash.
    from driftline.drift.reference import ReferenceSource, ReferenceUnavailableError

    source = ReferenceSource(
        mlflow_server.tracking_uri,
        unique,
        settings.model.spec.features,
        None,
        None,  # type: ignore[arg-type]
    )
    with pytest.raises(ReferenceUnavailableError):
        source.load("1")


def test_a_pickle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame, labels = data(200)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        frame[list(NUMERIC)].to_numpy(), labels
    )
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(pipe))
    settings = settings_for(tmp_path, "http://127.0.0.1:1", "nowhere")
    code = trainer_main(["--model-file", str(settings.model_file), "import", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.pkl is a pickle" in err and "skops" in err and "ONNX" in err


def test_a_mismatched_input_is_refused_naming_it(tmp_path: Path) -> None:
    frame, labels = data(200)
    frame = frame.assign(e=frame["a"])
    x = frame[["a", "b", "c", "d", "e"]].to_numpy()
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, labels)
    graph = convert_sklearn(
        pipe,
        initial_types=[("x", FloatTensorType([None, 5]))],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
    )
    path = tmp_path / "five.onnx"
    path.write_bytes(graph.SerializeToString())
    settings = settings_for(tmp_path, "http://127.0.0.1:1", "nowhere")
    with pytest.raises(ModelImportError) as err:
        import_model(settings, path)
    assert str(err.value) == (
        "the model's input 'x' has 5 columns; the spec has 4 numeric features: a, b, c, d"
    )


def test_per_feature_inputs_and_a_zipmap_output(tmp_path: Path) -> None:
    """One input per feature maps by name; a ZipMap output is refused with the fix."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in NUMERIC]
    out = helper.make_tensor_sequence_value_info("output_probability", TensorProto.FLOAT, None)
    node = helper.make_node("Concat", list(NUMERIC), ["joined"], axis=1)
    graph = helper.make_graph([node], "g", inputs, [out])
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    settings = settings_for(tmp_path, "http://127.0.0.1:1", "nowhere")
    with pytest.raises(ModelImportError, match="zipmap"):
        import_model(settings, path)


def test_inference_serves_the_imported_version(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str, redis_server: Any, kafka: Any
) -> None:
    from tests.integration.inference.harness import servers

    frame, labels = data(400, seed=4)
    model = numeric_onnx(tmp_path, frame, labels)
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique)
    import_model(settings, model, write_sample(tmp_path / "s.csv", frame[list(NUMERIC)], labels))
    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        numeric=NUMERIC,
        inference={"baseline": False},
    )
    (tmp_path / "serve").mkdir()
    with servers(tmp_path / "serve") as start:
        server = start(doc)
        reply = server.predict(dict(zip(NUMERIC, [2.0, 5.0, -1.0, 100.0], strict=True)))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    print(f"\nthe imported version answers: {body}")
    assert body["model_version"] == "1"
    assert body["label"] == int(np.argmax(body["probabilities"]))


def test_from_run_uris_and_only_while_there_is_no_version(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the operator's import Job runs: the files in an MLflow run, `--if-no-version`."""
    import mlflow

    frame, labels = data(300, seed=8)
    model = numeric_onnx(tmp_path, frame, labels)
    sample = write_sample(tmp_path / "sample.csv", frame[list(NUMERIC)], labels)
    client = mlflow.MlflowClient(mlflow_server.tracking_uri)
    experiment = client.create_experiment(f"{unique}-files")
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(model))
    client.log_artifact(run.info.run_id, str(sample))
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique)
    argv = [
        "--model-file", str(settings.model_file), "import",
        f"runs:/{run.info.run_id}/{model.name}",
        "--sample", f"runs:/{run.info.run_id}/sample.csv",
        "--if-no-version",
    ]  # fmt: skip
    assert trainer_main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "imported model4.onnx (onnx)" in out and "sample:sample.csv, 300 rows" in out
    check_registered(settings, unique)

    # Run again (a Job's retry, `driftline up` once more): nothing new, and success.
    assert trainer_main(argv) == 0
    out = capsys.readouterr().out
    assert "has a champion already (version 1): nothing imported" in out
    assert out.strip().splitlines()[-1] == "1"
    # A URI nothing answers: said plainly, nothing registered.
    bad = [*argv[:3], f"runs:/{run.info.run_id}/missing.onnx", "--force"]
    assert trainer_main(bad) == 2
    assert "cannot fetch runs:/" in capsys.readouterr().err
