"""`driftline import`: the trainer's import command, run against a local run's servers."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from driftline.local.cli import main
from driftline.local.runtime import RUNTIME_FILE, RuntimeInfo


def write_run(state_dir: Path, model_file: Path) -> RuntimeInfo:
    info = RuntimeInfo(
        model="fraud",
        namespace="default",
        model_file=str(model_file),
        kafka_bootstrap_servers="127.0.0.1:19092",
        kafka_kind="tansu",
        redis_url="redis://127.0.0.1:16379/0",
        mlflow_tracking_uri="http://127.0.0.1:15000",
        inference_url=None,
        metrics_ports={},
        pids={},
        started_at=0.0,
    )
    state_dir.mkdir(parents=True)
    (state_dir / RUNTIME_FILE).write_text(json.dumps(asdict(info)))
    return info


def test_import_runs_the_trainers_command_against_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(tmp_path / "run", tmp_path / "fraud.yaml")
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(argv: list[str], env: dict[str, str], check: bool) -> Any:
        calls.append((argv, env))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    code = main(
        [
            "import",
            str(tmp_path / "model.onnx"),
            "--state-dir",
            str(tmp_path / "run"),
            "--sample",
            str(tmp_path / "rows.csv"),
            "--trust",
            "mypkg.Scaler",
        ]
    )
    assert code == 0
    ((argv, env),) = calls
    assert argv[1:4] == ["-m", "driftline.trainer", "import"]
    assert argv[4] == str((tmp_path / "model.onnx").resolve())
    assert argv[argv.index("--sample") + 1] == str((tmp_path / "rows.csv").resolve())
    assert argv[argv.index("--trust") + 1] == "mypkg.Scaler"
    assert env["DRIFTLINE_TRAINER_MODEL_FILE"] == str(tmp_path / "fraud.yaml")
    assert env["DRIFTLINE_TRAINER_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"


def test_import_without_a_run_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["import", "model.onnx", "--state-dir", str(tmp_path / "none")])
    assert code == 1
    assert "driftline up" in capsys.readouterr().err


def test_the_initial_model_s_paths_are_taken_from_the_model_file_s_folder(tmp_path: Path) -> None:
    from driftline.api.spec import InitialModelSpec
    from driftline.local.initial_model import import_arguments

    initial = InitialModelSpec(uri="models/booster.json", sample="s3://bucket/rows.parquet")
    args = import_arguments(initial, tmp_path / "fraud.yaml")
    assert args == [
        str(tmp_path / "models" / "booster.json"),
        "--sample",
        "s3://bucket/rows.parquet",
        "--if-no-version",
    ]
    absolute = InitialModelSpec(uri="file:///srv/m.onnx", sample="/srv/rows.csv")
    assert import_arguments(absolute, tmp_path / "fraud.yaml")[:3] == [
        "file:///srv/m.onnx",
        "--sample",
        "/srv/rows.csv",
    ]


def test_import_passes_a_uri_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path / "run", tmp_path / "fraud.yaml")
    calls: list[list[str]] = []

    def fake_run(argv: list[str], env: dict[str, str], check: bool) -> Any:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    uri = "runs:/0123/booster.ubj"
    code = main(["import", uri, "--state-dir", str(tmp_path / "run"), "--format", "xgboost"])
    assert code == 0
    ((argv),) = calls
    assert argv[4] == uri and argv[argv.index("--format") + 1] == "xgboost"
