"""A drift the monitor reports becomes a Warning Event, when `onDrift` asks for alerts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from driftline.api.status import DriftStatus
from driftline.operator import handlers
from driftline.operator.controller import Controller, alerts
from driftline.operator.status_report import Observation, compute_status

from .conftest import defaults, sample

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    posted: list[tuple[str, str, str]] = []

    def recorder(kind: str) -> Any:
        return lambda body, *, reason, message: posted.append((kind, reason, message))

    monkeypatch.setattr(kopf, "info", recorder("Normal"))
    monkeypatch.setattr(kopf, "warn", recorder("Warning"))
    return posted


@pytest.mark.parametrize(("on_drift", "alerted"), [(["alert"], True), (["retrain"], False)])
def test_drift_event_and_condition_follow_alert(
    events: list[tuple[str, str, str]], on_drift: list[str], alerted: bool
) -> None:
    model = sample("minimal", drift__onDrift=on_drift)
    assert alerts(model) is alerted
    controller = Controller(defaults(), cluster=None, backends=None, rollouts=None)  # type: ignore[arg-type]
    before = controller.waiting_status(model, None, "parts starting")
    assert (before.condition("DriftDetected") is not None) is alerted
    drift = DriftStatus(detected=True, kind="concept", score=0.42, last_detected_at=T0)
    after = compute_status(before, Observation(1, drift=drift, drift_alert=alerts(model)), T0)
    patch = kopf.Patch()
    handlers._write_status(model.to_manifest(), patch, before, after)
    warnings = [e for e in events if e[:2] == ("Warning", "DriftDetected")]
    expected = [("Warning", "DriftDetected", "concept drift (score 0.42)")]
    assert warnings == (expected if alerted else [])
    conditions = {c["type"]: c for c in patch["status"]["conditions"]}
    assert ("DriftDetected" in conditions) is alerted
    assert patch["status"]["drift"]["detected"] is True  # mirrored either way
