"""Why a part is not available, read from what its Pods and claims say."""

from __future__ import annotations

from typing import Any

from driftline.operator.part_problems import claim_problem, part_problems, pod_problem
from driftline.operator.status_report import Observation, compute_status

from .test_status_report import PARTS, T0, deployment


def pod(
    part: str,
    *,
    name: str = "",
    conditions: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    limit: str | None = None,
) -> dict[str, Any]:
    resources = {"limits": {"memory": limit}} if limit else {}
    return {
        "metadata": {
            "name": name or f"m-{part}-abc",
            "labels": {"app.kubernetes.io/component": part},
        },
        "spec": {"containers": [{"name": part, "resources": resources}]},
        "status": {"conditions": conditions or [], "containerStatuses": containers or []},
    }


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available",
}


def crash(part: str, reason: str, code: int) -> dict[str, Any]:
    return {
        "name": part,
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {"terminated": {"reason": reason, "exitCode": code}},
    }


def test_an_unschedulable_pod_says_what_the_scheduler_said() -> None:
    problem = pod_problem(pod("inference", conditions=[UNSCHEDULABLE]))
    assert problem is not None
    assert problem.startswith("Unschedulable: 0/1 nodes are available: 1 Insufficient cpu")


def test_a_container_killed_at_its_memory_limit_names_the_limit() -> None:
    problem = pod_problem(pod("drift", containers=[crash("drift", "OOMKilled", 137)], limit="1Gi"))
    assert problem == (
        "drift: OOMKilled at its memory limit 1Gi (4 restarts): raise the part's memory limit"
    )


def test_a_crash_loop_gives_the_last_exit() -> None:
    problem = pod_problem(pod("joiner", containers=[crash("joiner", "Error", 3)]))
    assert problem == "joiner: CrashLoopBackOff, last exit Error (code 3, 4 restarts)"


def test_an_image_that_cannot_be_pulled_is_named() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x/inference:1"'}
    problem = pod_problem(
        pod("inference", containers=[{"name": "inference", "state": {"waiting": waiting}}])
    )
    assert problem == 'inference: ImagePullBackOff: Back-off pulling image "x/inference:1"'


def test_a_pod_on_its_way_is_no_problem() -> None:
    starting = {"name": "trainer", "state": {"waiting": {"reason": "ContainerCreating"}}}
    assert pod_problem(pod("trainer", containers=[starting])) is None
    assert pod_problem(pod("trainer")) is None
    going = pod("trainer", conditions=[UNSCHEDULABLE])
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_problem(going) is None


def test_a_pending_claim_says_which_setting_fixes_it() -> None:
    claim = {
        "metadata": {"name": "m-trainer-checkpoints"},
        "spec": {},
        "status": {"phase": "Pending"},
    }
    problem = claim_problem(claim)
    assert problem is not None
    assert problem.startswith("PersistentVolumeClaim m-trainer-checkpoints is Pending")
    assert "trainer_storage_class" in problem and "ephemeral" in problem
    assert claim_problem({**claim, "status": {"phase": "Bound"}}) is None


def test_only_the_parts_asked_about_and_the_first_problem_each() -> None:
    pods = [
        pod("inference", name="a", conditions=[UNSCHEDULABLE]),
        pod("inference", name="b", containers=[crash("inference", "Error", 1)]),
        pod("joiner", conditions=[UNSCHEDULABLE]),
        pod("trainer", conditions=[UNSCHEDULABLE]),
    ]
    claims = [{"metadata": {"name": "c"}, "spec": {}, "status": {"phase": "Pending"}}]
    found = part_problems(pods, claims, ["inference", "trainer"])
    assert set(found) == {"inference", "trainer"}
    assert found["inference"].startswith("Unschedulable")
    assert found["trainer"].startswith("PersistentVolumeClaim c is Pending")


def test_status_carries_the_reason_of_an_unavailable_part() -> None:
    obs = Observation(
        generation=1,
        expected_parts=PARTS,
        deployments=tuple(deployment(p, available=0 if p == "trainer" else 1) for p in PARTS),
        problems={"trainer": "PersistentVolumeClaim c is Pending: ..."},
    )
    status = compute_status(None, obs, T0)
    assert status.phase == "Pending"
    assert status.message == "waiting for parts: trainer (PersistentVolumeClaim c is Pending: ...)"
    ready = status.condition("Ready")
    assert ready is not None
    assert "trainer 0/1 (PersistentVolumeClaim c is Pending: ...)" in ready.message
    assert "inference 1/1," in ready.message


def test_a_rolling_update_that_cannot_schedule_says_why() -> None:
    rolling = deployment("inference", current=False)
    obs = Observation(
        generation=1,
        expected_parts=PARTS,
        deployments=(rolling, *(deployment(p) for p in PARTS[1:])),
        problems={"inference": "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu"},
    )
    progressing = compute_status(None, obs, T0).condition("Progressing")
    assert progressing is not None and progressing.reason == "RollingUpdate"
    assert progressing.message == (
        "updating: inference (Unschedulable: 0/1 nodes are available: 1 Insufficient cpu)"
    )
