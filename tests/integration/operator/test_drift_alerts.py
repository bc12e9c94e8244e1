"""A drift the monitor reports: `status.drift` always, and with `onDrift: [alert]` a
`DriftDetected` condition and a Warning Event on the DynamicModel."""

from __future__ import annotations

import time
from typing import Any

import pytest

from driftline.api.events import DriftEvent, encode
from driftline.common.redis_state import drift_key
from driftline.local.servers import RedisServer

from .plane import ControlPlane, model_manifest, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def events(plane: ControlPlane, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    items = plane.kube.list(f"/api/v1/namespaces/{ns}/events")
    return [
        e
        for e in items
        if e.get("involvedObject", {}).get("name") == name and e.get("reason") == reason
    ]


def report_drift(redis_url: str, ns: str, name: str, event_id: str) -> None:
    """What the drift monitor leaves in Redis for the operator after a drift event."""
    import redis

    event = DriftEvent(
        event_id=event_id,
        model=name,
        model_version="1",
        kind="concept",
        detector="errors",
        detected_at=time.time(),
        score=0.42,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(drift_key(ns, name), encode(event))
    finally:
        client.close()


def drift_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == "DriftDetected"), None)


def test_drift_alerts_follow_on_drift(
    control_plane: ControlPlane, ns: str, redis_server: RedisServer
) -> None:
    loud = model_manifest("loud", ns, redis={"url": redis_server.url})
    loud["spec"]["drift"] = {"onDrift": ["alert", "retrain"]}
    quiet = model_manifest("quiet", ns, redis={"url": redis_server.url})
    quiet["spec"]["drift"] = {"onDrift": ["retrain"]}
    for manifest in (loud, quiet):
        control_plane.create_model(manifest)
        report_drift(redis_server.url, ns, manifest["metadata"]["name"], "e-1")

    with control_plane.operator(ns):

        def drift_mirrored(name: str) -> bool:
            return bool(control_plane.status(ns, name).get("drift", {}).get("detected"))

        wait_for(lambda: drift_mirrored("loud") and drift_mirrored("quiet"), 60, "status.drift")
        wait_for(lambda: events(control_plane, ns, "loud", "DriftDetected"), 30, "the Event")
        (event,) = events(control_plane, ns, "loud", "DriftDetected")
        assert event["type"] == "Warning"
        assert "concept drift" in event["message"] and "0.42" in event["message"]
        condition = drift_condition(control_plane.status(ns, "loud"))
        assert condition is not None
        assert (condition["status"], condition["reason"]) == ("True", "ConceptDrift")

        # Without alert: the drift is mirrored, but no condition and no Event.
        status = control_plane.status(ns, "quiet")
        assert status["drift"]["kind"] == "concept"
        assert drift_condition(status) is None
        time.sleep(3)  # a few ticks
        assert not events(control_plane, ns, "quiet", "DriftDetected")
        assert len(events(control_plane, ns, "loud", "DriftDetected")) == 1  # one per event
