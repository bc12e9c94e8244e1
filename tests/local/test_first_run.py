"""A first run with no version registered says the ways forward, with exact commands."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import pytest

from driftline.api import load_dynamic_model
from driftline.local.first_run import bootstrap_command, next_steps
from driftline.trainer import __main__ as trainer

MINIMAL = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "minimal.yaml"


def test_the_steps_name_the_data_columns_and_the_command() -> None:
    model = load_dynamic_model(MINIMAL)
    text = "\n".join(next_steps(model, MINIMAL, "http://127.0.0.1:5123"))
    assert "No version of churn is registered yet" in text
    assert "tenure_months, monthly_spend, plan, label (the class index, 0 to 1)" in text
    assert bootstrap_command(MINIMAL, "http://127.0.0.1:5123") in text
    assert "driftline import MODEL.onnx --sample DATA.csv" in text


def test_the_command_is_one_the_trainer_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The printed command parses with the trainer's own parser and settings."""
    words = shlex.split(bootstrap_command(MINIMAL, "http://127.0.0.1:5123", "history.csv"))
    name, _, value = words[0].partition("=")
    assert words[1:4] == ["python", "-m", "driftline.trainer"]
    monkeypatch.setenv(name, value)
    seen: list[tuple[Any, argparse.Namespace]] = []
    monkeypatch.setattr(trainer, "run_bootstrap", lambda s, a: seen.append((s, a)) or 0)
    assert trainer.main(words[4:]) == 0
    ((settings, args),) = seen
    assert settings.connections.mlflow_tracking_uri == "http://127.0.0.1:5123"
    assert settings.model.name == "churn"
    assert args.command == "bootstrap" and args.from_file == Path("history.csv")
