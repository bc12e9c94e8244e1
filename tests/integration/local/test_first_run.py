"""A first run: `driftline up` and `driftline status` of a model with no version say
what to do, and stop saying it once a version is registered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.resource import parse_dynamic_model
from driftline.inference.contract import FeatureContract
from driftline.local.first_run import serves_nothing_yet
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline.local.status_cmd import print_status
from driftline_testing.models import mlp_model, model_document, register_version, write_model_file

REPO = Path(__file__).resolve().parents[3]
MINIMAL = REPO / "manifests" / "samples" / "minimal.yaml"

pytestmark = pytest.mark.integration


def test_status_says_what_to_do_until_a_version_is_registered(
    tmp_path: Path,
    unique: str,
    mlflow_server: MlflowServer,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = model_document(unique, tracking_uri=mlflow_server.tracking_uri, redis=redis_server.url)
    model_file = write_model_file(tmp_path / "model.yaml", doc)
    info = {
        "model": unique, "namespace": "test", "model_file": str(model_file),
        "kafka_bootstrap_servers": "127.0.0.1:9", "kafka_kind": "tansu",
        "redis_url": redis_server.url, "mlflow_tracking_uri": mlflow_server.tracking_uri,
        "inference_url": "http://127.0.0.1:9", "metrics_ports": {}, "pids": {}, "started_at": 0.0,
    }  # fmt: skip
    (tmp_path / "runtime.json").write_text(json.dumps(info))

    assert serves_nothing_yet(mlflow_server.tracking_uri, unique)
    assert print_status(None, tmp_path) == 0
    out = capsys.readouterr().out
    assert "No version of" in out and "python -m driftline.trainer bootstrap" in out
    assert f"DRIFTLINE_TRAINER_MLFLOW_TRACKING_URI={mlflow_server.tracking_uri}" in out
    assert "driftline import MODEL.onnx --sample DATA.csv" in out

    contract = FeatureContract(parse_dynamic_model(doc).spec)
    register_version(
        mlflow_server.tracking_uri, unique, mlp_model(contract), aliases=[ALIAS_CHAMPION]
    )
    assert not serves_nothing_yet(mlflow_server.tracking_uri, unique)
    assert print_status(None, tmp_path) == 0
    assert "bootstrap" not in capsys.readouterr().out


def test_an_unreachable_registry_gives_no_hint() -> None:
    assert not serves_nothing_yet(f"http://127.0.0.1:{free_port()}", "m")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_up_without_a_version_prints_the_ways_forward(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "driftline.local.cli", "up", "-f", str(MINIMAL),
               "--parts", "rollout", "--state-dir", str(tmp_path / "run")]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
    out = "".join(lines)
    assert "driftline: churn is up" in out, out
    assert "No version of churn is registered yet" in out
    assert "tenure_months, monthly_spend, plan, label" in out
    assert f"--model-file {MINIMAL}" in out
    assert "driftline import MODEL.onnx --sample DATA.csv" in out
