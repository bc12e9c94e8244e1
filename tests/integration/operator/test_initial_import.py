"""`spec.model.initial` under the operator: an import Job owned by the model, replaced when
the initial model changes, gone when the spec no longer names one.

On the emulator the Job is an object (nothing runs it); on the test rig's control plane
the API server validates and defaults it too. What the Job's command does is the
trainer's import (tests/integration/trainer/test_import.py, `--if-no-version`).
"""

from __future__ import annotations

from typing import Any

import pytest

from .plane import ControlPlane, model_manifest, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
INITIAL = {"uri": "runs:/0123456789abcdef/model.onnx", "sample": "runs:/0123456789abcdef/s.csv"}


def model_with(ns: str, initial: dict[str, Any] | None) -> dict[str, Any]:
    manifest = model_manifest("churn", ns)
    if initial is not None:
        manifest["spec"]["model"]["initial"] = initial
    return manifest


def jobs(plane: ControlPlane, ns: str) -> list[dict[str, Any]]:
    return plane.children(JOBS, ns, "churn")


def test_the_import_job_follows_the_initial_model(control_plane: ControlPlane, ns: str) -> None:
    control_plane.create_model(model_with(ns, INITIAL))
    with control_plane.operator(ns):
        (job,) = wait_for(lambda: jobs(control_plane, ns) or None, 60, "the import Job")
        uid = control_plane.model(ns, "churn")["metadata"]["uid"]  # type: ignore[index]
        (owner,) = job["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("DynamicModel", uid)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["command"][3:] == [
            "import", INITIAL["uri"], "--sample", INITIAL["sample"], "--if-no-version"
        ]  # fmt: skip
        first = job["metadata"]["name"]
        if control_plane.real:  # the rig's nodes complete a Job's pod at once
            done = wait_for(
                lambda: (
                    (control_plane.status(ns, "churn").get("initialImport") or {}).get("state")
                    == "Succeeded"
                ),
                60,
                "status to say the import succeeded",
            )
            assert done

        # Another initial model: a new Job (a Job's template cannot change), the old pruned.
        control_plane.patch_model(
            ns, "churn", {"spec": {"model": {"initial": {**INITIAL, "format": "onnx"}}}}
        )
        names = wait_for(
            lambda: (
                (n := [j["metadata"]["name"] for j in jobs(control_plane, ns)])
                and first not in n
                and n
            ),
            60,
            "the new import Job, and the old one gone",
        )
        assert len(names) == 1 and names[0].startswith("churn-import-")

        # No initial model any more: no Job.
        control_plane.patch_model(ns, "churn", {"spec": {"model": {"initial": None}}})
        wait_for(lambda: not jobs(control_plane, ns), 60, "no import Job")


def test_a_failed_import_says_why_in_status(control_plane: ControlPlane, ns: str) -> None:
    """The import refuses its input (exit 2): the Job fails at once by its pod failure
    policy (no retries that cannot help), and status quotes the import's last words.

    The rig's simulated nodes complete every Job pod they run with exit 0, so the pod is
    kept off them (more CPU than a node has) and the test reports its exit as a kubelet
    would."""
    control_plane.require_real("the Job controller")
    control_plane.create_model(model_with(ns, INITIAL))
    pods = f"/api/v1/namespaces/{ns}/pods"
    huge = {"cpu": "500", "memory": "128Mi"}
    with control_plane.operator(ns, trainer_resources=huge):
        (job,) = wait_for(lambda: jobs(control_plane, ns) or None, 60, "the import Job")
        name = job["metadata"]["name"]

        def job_pods() -> list[dict[str, Any]]:
            return control_plane.kube.list(pods, f"batch.kubernetes.io/job-name={name}")

        def pending_pod() -> dict[str, Any] | None:
            return next((p for p in job_pods() if p["status"].get("phase") == "Pending"), None)

        pod = wait_for(
            pending_pod,
            60,
            "the import's pod, not scheduled",
            describe=lambda: [(p["metadata"]["name"], p["status"]) for p in job_pods()],
        )
        # What the kubelet reports when the import exits 2 (the node here is simulated).
        said = "import: model.onnx is not an ONNX model: protobuf parse error"
        terminated = {
            "exitCode": 2,
            "reason": "Error",
            "message": said,
            "startedAt": "2025-01-01T00:00:00Z",
            "finishedAt": "2025-01-01T00:00:05Z",
        }
        container = {
            "name": "import",
            "ready": False,
            "restartCount": 0,
            "image": job["spec"]["template"]["spec"]["containers"][0]["image"],
            "imageID": "",
            "state": {"terminated": terminated},
        }
        control_plane.kube.merge_patch(
            f"{pods}/{pod['metadata']['name']}/status",
            {"status": {"phase": "Failed", "containerStatuses": [container]}},
        )

        def failed() -> dict[str, Any] | None:
            status = control_plane.status(ns, "churn")
            return status if (status.get("initialImport") or {}).get("state") == "Failed" else None

        status = wait_for(failed, 90, "status to say the import failed")
    assert status["initialImport"]["job"] == name
    assert status["initialImport"]["message"].endswith(f"exit 2: {said}")
    assert status["phase"] == "Degraded"
    assert status["message"].startswith(f"the initial model's import failed ({name}): ")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InitialImportFailed" and said in degraded["message"]
    (job,) = jobs(control_plane, ns)
    assert job["status"].get("failed") == 1  # failed at once: no retry of a refusal
