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
