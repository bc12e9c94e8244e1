"""Boosters and torch modules brought in: real models trained here, real converters.

XGBoost (JSON and UBJSON model files) and LightGBM (text model files) converted by
onnxmltools, a TorchScript module exported by torch.onnx; each checked by ONNX Runtime
against the native model and registered in a real MLflow. The refusals: a file
written by torch.save (a pickle, or a state dict), a booster whose columns are not
features of the spec, a classifier answering logits.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import torch
import xgboost as xgb

from driftline.api import artifacts
from driftline.local.servers import MlflowServer
from driftline.trainer.__main__ import main as trainer_main
from driftline.trainer.model_import import ModelImportError, import_model
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import ModelVersions
from driftline_testing.models import model_document, write_model_file

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_logging")]

NUMERIC = ("a", "b", "c", "d")


def data(n: int, seed: int = 0, classes: int = 2) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 4)) * [1.0, 3.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]).astype(
        np.float32
    )
    score = x[:, 0] - 0.3 * (x[:, 1] - 5) + rng.normal(scale=0.5, size=n)
    labels = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return pd.DataFrame(x, columns=list(NUMERIC)), labels.astype(np.int64)


def settings_for(
    tmp_path: Path, tracking_uri: str, name: str, *, task: str = "classification", classes: int = 2
) -> TrainerSettings:
    doc = model_document(
        name, tracking_uri=tracking_uri, numeric=NUMERIC, task=task, classes=classes
    )
    path = write_model_file(tmp_path / f"{name}.yaml", doc)
    return TrainerSettings(model_file=path, checkpoint_dir=tmp_path / "state", metrics_port=0)


def write_parquet(path: Path, frame: pd.DataFrame, labels: Any | None) -> Path:
    table = frame if labels is None else frame.assign(label=labels)
    table.to_parquet(path)
    return path


def registered(settings: TrainerSettings, name: str, fmt: str) -> None:
    versions = ModelVersions(settings.connections.mlflow_tracking_uri, name)
    for alias in (artifacts.ALIAS_CHAMPION, artifacts.ALIAS_BASELINE):
        info = versions.by_alias(alias)
        assert info is not None and info.version == "1"
        assert info.tags["driftline.learner"] == f"imported:{fmt}"


# --- XGBoost ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "classes"), [(".json", 2), (".ubj", 3)], ids=["json-binary", "ubj-3-classes"]
)
def test_an_xgboost_classifier(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str, suffix: str, classes: int
) -> None:
    frame, labels = data(600, classes=classes)
    # Trained on the columns in another order than the spec's: mapped by name.
    order = ["d", "b", "a", "c"]
    objective = {"objective": "binary:logistic"} if classes == 2 else {
        "objective": "multi:softprob", "num_class": classes
    }  # fmt: skip
    booster = xgb.train(
        {**objective, "max_depth": 3, "eta": 0.3},
        xgb.DMatrix(frame[order], label=labels),
        num_boost_round=20,
    )
    path = tmp_path / f"booster{suffix}"
    booster.save_model(str(path))
    sample = write_parquet(tmp_path / "sample.parquet", frame, labels)
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique, classes=classes)

    started = time.perf_counter()
    done = import_model(settings, path, sample)
    print(f"\nimport time, xgboost{suffix} ({classes} classes): "
          f"{time.perf_counter() - started:.2f}s, parity {done.parity:.1e}")  # fmt: skip
    assert done.fmt == "xgboost" and done.parity <= 1e-5 and done.rows == 600
    registered(settings, unique, "xgboost")


def test_an_xgboost_regressor_with_large_values(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str
) -> None:
    """Values near 100 in float32: parity is relative beyond magnitude 1."""
    frame, _ = data(400, seed=2)
    target = frame["d"] * 2 + frame["a"]
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 4},
        xgb.DMatrix(frame.to_numpy(), label=target),
        num_boost_round=30,
    )
    path = tmp_path / "reg.json"
    booster.save_model(str(path))
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique, task="regression")
    done = import_model(settings, path, write_parquet(tmp_path / "s.parquet", frame, None))
    assert done.parity <= 1e-5
    registered(settings, unique, "xgboost")


def test_a_booster_with_columns_outside_the_spec_is_refused(tmp_path: Path) -> None:
    frame, labels = data(200)
    frame = frame.rename(columns={"c": "z"})
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(frame, label=labels), 3)
    path = tmp_path / "b.json"
    booster.save_model(str(path))
    settings = settings_for(tmp_path, "http://127.0.0.1:1", "nowhere")
    with pytest.raises(ModelImportError) as err:
        import_model(settings, path)
    assert "columns ['z'] are not features of the spec" in str(err.value)


# --- LightGBM --------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3])
def test_a_lightgbm_classifier(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str, classes: int
) -> None:
    frame, labels = data(800, seed=1, classes=classes)
    objective = {"objective": "binary"} if classes == 2 else {
        "objective": "multiclass", "num_class": classes
    }  # fmt: skip
    booster = lgb.train(
        {**objective, "num_leaves": 15, "verbose": -1},
        lgb.Dataset(frame, label=labels),
        num_boost_round=30,
    )
    path = tmp_path / "booster.txt"
    booster.save_model(str(path))
    sample = write_parquet(tmp_path / "sample.parquet", frame, None)
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique, classes=classes)

    started = time.perf_counter()
    done = import_model(settings, path, sample)
    print(f"\nimport time, lightgbm ({classes} classes): "
          f"{time.perf_counter() - started:.2f}s, parity {done.parity:.1e}")  # fmt: skip
    assert done.fmt == "lightgbm" and done.parity <= 1e-5 and done.rows == 800
    registered(settings, unique, "lightgbm")


def test_a_lightgbm_regressor_on_an_array(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str
) -> None:
    """Trained on an array (default names Column_0..): the spec's numeric features in order."""
    frame, _ = data(500, seed=3)
    x = frame.to_numpy()
    booster = lgb.train(
        {"objective": "regression", "num_leaves": 15, "verbose": -1},
        lgb.Dataset(x, label=x[:, 0] * 3 - x[:, 2]),
        num_boost_round=30,
    )
    path = tmp_path / "reg.txt"
    booster.save_model(str(path))
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique, task="regression")
    done = import_model(settings, path)  # no sample: random rows within the spec's ranges
    assert done.parity <= 1e-5
    registered(settings, unique, "lightgbm")


# --- torch -----------------------------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self, width: int = 4, classes: int = 2, softmax: bool = True) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(width, 16), torch.nn.ReLU(), torch.nn.Linear(16, classes)
        )
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.body((x - 25.0) / 40.0)
        return torch.softmax(logits, dim=1) if self.softmax else logits


class PerFeature(torch.nn.Module):
    """forward(a, b, c, d): one [N, 1] tensor per feature, a regressor."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor
    ) -> torch.Tensor:
        return self.linear(torch.cat([a, b, c, d], dim=1))


def trained(net: torch.nn.Module, frame: pd.DataFrame, labels: Any) -> torch.nn.Module:
    x = torch.tensor(frame.to_numpy(), dtype=torch.float32)
    y = torch.tensor(labels)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(net(x) + 1e-9), y)
        loss.backward()
        opt.step()
    return net.eval()


def test_a_torchscript_classifier(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    frame, labels = data(500, seed=5)
    net = trained(Net(), frame, labels)
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    sample = write_parquet(tmp_path / "sample.parquet", frame, labels)
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique)

    code = trainer_main(
        ["--model-file", str(settings.model_file), "import", path.as_uri(), "--sample", str(sample)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(torchscript)" in out and "sample:sample.parquet, 500 rows" in out
    registered(settings, unique, "torchscript")


def test_a_traced_module_with_one_input_per_feature(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str
) -> None:
    frame, _ = data(300, seed=6)
    example = tuple(torch.zeros(2, 1) for _ in NUMERIC)
    path = tmp_path / "per_feature.pt"
    torch.jit.trace(PerFeature().eval(), example).save(str(path))
    settings = settings_for(tmp_path, mlflow_server.tracking_uri, unique, task="regression")
    done = import_model(settings, path, write_parquet(tmp_path / "s.parquet", frame, None))
    assert done.fmt == "torchscript" and done.parity <= 1e-5


def test_torch_save_files_are_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state dict and a pickled module: neither is a TorchScript archive; never loaded."""
    settings = settings_for(tmp_path, "http://127.0.0.1:1", "nowhere")
    state = tmp_path / "weights.pth"
    torch.save(Net().state_dict(), state)
    whole = tmp_path / "module.pt"
    buffer = io.BytesIO()
    torch.save(Net(), buffer)
    whole.write_bytes(buffer.getvalue())
    for path in (state, whole):
        code = trainer_main(["--model-file", str(settings.model_file), "import", str(path)])
        err = capsys.readouterr().err
        assert code == 2
        assert f"{path.name} is not a TorchScript archive" in err
        assert "torch.jit.script(model).save" in err


def test_a_classifier_answering_logits_is_refused(tmp_path: Path) -> None:
    frame, labels = data(200, seed=7)
    path = tmp_path / "logits.pt"
    torch.jit.script(Net(softmax=False)).save(str(path))
    settings = settings_for(tmp_path, "http://127.0.0.1:1", "nowhere")
    with pytest.raises(ModelImportError, match=r"not probabilities.*softmax"):
        import_model(settings, path, write_parquet(tmp_path / "s.parquet", frame, labels))


def test_a_torchscript_module_of_the_wrong_width_names_its_input(tmp_path: Path) -> None:
    path = tmp_path / "five.pt"
    torch.jit.script(Net(width=5)).save(str(path))
    settings = settings_for(tmp_path, "http://127.0.0.1:1", "nowhere")
    with pytest.raises(ModelImportError, match=r"cannot export the module fed x \[N, 4\]"):
        import_model(settings, path)
