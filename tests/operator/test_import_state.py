"""What became of the import Job of `spec.model.initial`, and how status says it."""

from __future__ import annotations

from typing import Any

from driftline.api.status import InitialImportStatus
from driftline.operator.import_state import MAX_MESSAGE, import_state
from driftline.operator.status_report import Observation, compute_status

from .test_status_report import PARTS, T0, deployment

JOB = "churn-import-0a1b2c3d"


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": JOB}, "status": status}


def failed_pod(code: int, message: str, finished: str) -> dict[str, Any]:
    terminated = {"exitCode": code, "reason": "Error", "message": message, "finishedAt": finished}
    return {
        "status": {"containerStatuses": [{"name": "import", "state": {"terminated": terminated}}]}
    }


REFUSED = "import: model.pkl is a pickle; pass --trust with the types it may load"


def test_a_job_that_finished_has_succeeded() -> None:
    done = job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    assert import_state(done, []) == InitialImportStatus(job=JOB, state="Succeeded")


def test_a_failed_job_quotes_the_import_s_last_words() -> None:
    failed = job(
        failed=1,
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "Container import for pod x failed with exit code 2 matching rule 0",
            }
        ],
    )
    state = import_state(failed, [failed_pod(2, f"Traceback ...\n{REFUSED}\n", "t1")])
    assert state.state == "Failed"
    assert state.message.startswith("PodFailurePolicy: Container import")
    assert state.message.endswith(f"exit 2: Traceback ... {REFUSED}")


def test_while_retrying_the_latest_failure_is_given() -> None:
    pods = [failed_pod(1, "the registry: connection refused", "2025-01-01T00:00:10Z")]
    pods.append(failed_pod(1, "the registry: timed out", "2025-01-01T00:00:40Z"))
    state = import_state(job(failed=2, active=1), pods)
    assert state.state == "Running"
    assert state.message == "2 failed attempt(s), last: exit 1: the registry: timed out"
    assert import_state(job(active=1), []).message == ""


def test_long_last_words_keep_their_end() -> None:
    words = "x" * 5000 + " the error itself"
    failed = job(failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "X"}])
    state = import_state(failed, [failed_pod(2, words, "t")])
    assert state.message.endswith("the error itself")
    assert len(state.message) < MAX_MESSAGE + 50


def test_status_says_the_import_failed_while_nothing_is_served() -> None:
    failed = InitialImportStatus(job=JOB, state="Failed", message="PodFailurePolicy: ...; exit 2")
    obs = Observation(
        generation=1,
        expected_parts=PARTS,
        deployments=tuple(deployment(p) for p in PARTS),
        initial_import=failed,
    )
    status = compute_status(None, obs, T0)
    assert status.phase == "Degraded"
    assert status.message == f"the initial model's import failed ({JOB}): {failed.message}"
    degraded = status.condition("Degraded")
    assert degraded is not None and degraded.reason == "InitialImportFailed"
    assert status.initial_import == failed

    # Once a version serves (imported by hand, or trained), the old failure is history.
    served = Observation(**{**obs.__dict__, "versions": {"stable": "3"}})
    status = compute_status(status, served, T0)
    assert status.phase == "Serving" and status.stable_version == "3"
    degraded = status.condition("Degraded")
    assert degraded is not None and degraded.status == "False"


def test_a_running_import_changes_nothing_else() -> None:
    running = InitialImportStatus(job=JOB, state="Running")
    obs = Observation(
        generation=1,
        expected_parts=PARTS,
        deployments=tuple(deployment(p) for p in PARTS),
        initial_import=running,
    )
    status = compute_status(None, obs, T0)
    assert status.phase == "Serving" and status.initial_import == running
