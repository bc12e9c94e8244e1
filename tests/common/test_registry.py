"""MLflow's environment defaults: one place for every Driftline process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from driftline.common.registry import RegisteredModel, configure_mlflow, mlflow_environment


def test_the_environment_silences_mlflow_and_limits_its_requests() -> None:
    assert mlflow_environment() == {
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    env = mlflow_environment(timeout_seconds=7.9, retries=3, backoff_factor=1)
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"


def test_configure_keeps_what_the_environment_already_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    configure_mlflow(timeout_seconds=5, retries=2)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")


def test_rest_reads_need_an_http_tracking_server() -> None:
    assert RegisteredModel("http://mlflow:5000/", "m", rest_reads=True).rest
    assert not RegisteredModel("http://mlflow:5000", "m").rest
    assert not RegisteredModel("sqlite:///mlflow.db", "m", rest_reads=True).rest


def test_importing_the_adapter_imports_neither_mlflow_nor_httpx() -> None:
    code = (
        "import sys, driftline.common.registry; "
        "print('mlflow' in sys.modules, 'httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
