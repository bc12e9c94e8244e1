"""The timer never leaves a fixed spec stranded behind a Failed status.

kopf hands a timer the body it last saw: a tick that started just before a spec
was fixed can write Failed (of the old generation) over what reconcile reported
for the fix, and reconcile does not run again. The next tick sees a valid spec
whose status is Failed for an older generation, and applies it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from driftline.api.status import DynamicModelStatus
from driftline.operator import handlers
from driftline.operator.controller import Controller

from .conftest import defaults, sample


class RecordingController(Controller):
    """The real controller's status logic; applying only counts."""

    def __init__(self) -> None:
        super().__init__(defaults(), cluster=None, backends=None, rollouts=None)  # type: ignore[arg-type]
        self.applied: list[str] = []

    def apply(self, model: Any, **_: Any) -> tuple[int, list[str]]:
        self.applied.append(model.name)
        return 7, []

    def observe(
        self, model: Any, previous: DynamicModelStatus | None
    ) -> tuple[DynamicModelStatus, list[str]]:
        return self.waiting_status(model, previous, "parts starting"), []


def body_of(generation: int, status: DynamicModelStatus) -> dict[str, Any]:
    manifest = sample("minimal").to_manifest()
    manifest["metadata"]["generation"] = generation
    manifest["status"] = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return manifest


@pytest.fixture(autouse=True)
def quiet_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events need a running operator; these tests look at status and applies."""
    monkeypatch.setattr(kopf, "info", lambda *a, **k: None)
    monkeypatch.setattr(kopf, "warn", lambda *a, **k: None)


def test_a_tick_applies_a_valid_spec_whose_status_says_failed_for_an_older_generation() -> None:
    controller = RecordingController()
    failed = controller.invalid_status(None, 1, "spec.rollout.stickyKey: 'x1' is also a feature")
    patch = kopf.Patch()
    handlers.dynamicmodel_tick(
        body=body_of(2, failed), patch=patch, memo=SimpleNamespace(controller=controller)
    )  # type: ignore[arg-type]
    assert controller.applied == ["churn"]
    assert patch["status"]["observedGeneration"] == 2
    assert patch["status"]["phase"] != "Failed"


def test_a_tick_leaves_a_generation_reconcile_is_still_working_on() -> None:
    controller = RecordingController()
    pending = controller.waiting_status(sample("minimal"), None, "parts starting")
    patch = kopf.Patch()
    handlers.dynamicmodel_tick(
        body=body_of(2, pending), patch=patch, memo=SimpleNamespace(controller=controller)
    )  # type: ignore[arg-type]
    assert controller.applied == []
    assert not patch
