"""`driftline status` shows the last drift alert, when `drift.onDrift` asks for alerts."""

from __future__ import annotations

import json
from pathlib import Path

from driftline.api.events import DriftEvent
from driftline.local.runtime import RuntimeInfo
from driftline.local.status_cmd import _on_drift, drift_line
from driftline_testing.models import model_document, write_model_file

EVENT = DriftEvent(
    event_id="e-1",
    model="m",
    model_version="3",
    kind="covariate",
    detector="ks",
    detected_at=1000.0,
    score=0.0123,
    features=["amount", "hour"],
)


def test_the_last_alert_has_its_own_line() -> None:
    line = drift_line(EVENT, ["alert", "retrain"], now=1090.0)
    assert line.startswith("drift alert: ")
    for part in ("covariate", "ks", "0.0123", "amount, hour", "90s ago", "version 3"):
        assert part in line, line
    assert drift_line(None, ["alert"], now=0.0) == "drift alert: none yet"


def test_no_alert_line_without_alert() -> None:
    line = drift_line(EVENT, ["retrain", "rollback"], now=1090.0)
    assert line == "drift: no alerts (drift.onDrift: retrain, rollback)"
    assert drift_line(EVENT, [], now=0.0) == "drift: no alerts (drift.onDrift: none)"


def test_on_drift_comes_from_the_running_model(tmp_path: Path) -> None:
    doc = model_document("m")
    doc["spec"]["drift"] = {"onDrift": ["retrain"]}
    path = write_model_file(tmp_path / "m.yaml", doc)
    fields: dict[str, object] = {
        "model": "m",
        "namespace": "test",
        "model_file": str(path),
        "kafka_bootstrap_servers": "127.0.0.1:9",
        "kafka_kind": "tansu",
        "redis_url": "redis://127.0.0.1:9/0",
        "mlflow_tracking_uri": "sqlite:///x",
        "inference_url": None,
        "metrics_ports": {},
        "pids": {},
        "started_at": 0.0,
    }
    (tmp_path / "runtime.json").write_text(json.dumps(fields))
    info = RuntimeInfo.read(tmp_path)
    assert _on_drift(info) == ["retrain"]
    path.unlink()
    assert _on_drift(info) == ["alert", "retrain"]  # the file is gone: the spec's default
