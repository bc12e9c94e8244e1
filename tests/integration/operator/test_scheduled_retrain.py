"""`training.mode: scheduled` under the operator: a retrain CronJob owned by the model in
place of the trainer Deployment, its schedule following the spec, gone when training goes
online again.

On the emulator the CronJob is an object (nothing runs it); on the test rig's control plane
the API server validates and defaults it too. What its command does is the trainer's
retrain (tests/integration/trainer/test_retrain.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from .plane import ControlPlane, model_manifest, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CRONJOBS = "/apis/batch/v1/namespaces/{ns}/cronjobs"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"


def scheduled(ns: str) -> dict[str, Any]:
    manifest = model_manifest("churn", ns)
    manifest["spec"]["training"] = {"mode": "scheduled", "schedule": {"cron": "0 3 * * *"}}
    return manifest


def names(plane: ControlPlane, collection: str, ns: str) -> set[str]:
    return {o["metadata"]["name"] for o in plane.children(collection, ns, "churn")}


def test_the_retrain_cron_job_follows_the_training_mode(
    control_plane: ControlPlane, ns: str
) -> None:
    control_plane.create_model(scheduled(ns))
    with control_plane.operator(ns):
        (job,) = wait_for(
            lambda: control_plane.children(CRONJOBS, ns, "churn") or None, 60, "the CronJob"
        )
        uid = control_plane.model(ns, "churn")["metadata"]["uid"]  # type: ignore[index]
        (owner,) = job["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("DynamicModel", uid)
        assert job["spec"]["schedule"] == "0 3 * * *"
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["command"][3:] == ["retrain"]
        wait_for(lambda: "churn-joiner" in names(control_plane, DEPLOYMENTS, ns), 60, "parts")
        assert "churn-trainer" not in names(control_plane, DEPLOYMENTS, ns)

        # Another schedule: the same CronJob, patched.
        control_plane.patch_model(
            ns, "churn", {"spec": {"training": {"schedule": {"cron": "*/30 * * * *"}}}}
        )
        wait_for(
            lambda: [
                j
                for j in control_plane.children(CRONJOBS, ns, "churn")
                if j["spec"]["schedule"] == "*/30 * * * *"
            ],
            60,
            "the new schedule",
        )

        # Online again: the trainer Deployment back, the CronJob gone.
        control_plane.patch_model(ns, "churn", {"spec": {"training": {"mode": "online"}}})
        wait_for(
            lambda: (
                "churn-trainer" in names(control_plane, DEPLOYMENTS, ns)
                and not names(control_plane, CRONJOBS, ns)
            ),
            60,
            "the trainer Deployment, no CronJob",
        )
