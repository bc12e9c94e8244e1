"""Status is a pure function of what was observed; transitions keep their times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from driftline.api.status import DriftStatus, DynamicModelStatus, RolloutStatus
from driftline.operator.cluster import DeploymentState, workload_state
from driftline.operator.status_report import Observation, compute_status, parse_status, to_patch

T0 = datetime(2025, 1, 1, tzinfo=UTC)
PARTS = ("inference", "joiner", "trainer", "drift")


def deployment(
    part: str, available: int = 1, desired: int = 1, current: bool = True
) -> DeploymentState:
    return DeploymentState(
        part=part,
        name=f"m-{part}",
        desired=desired,
        ready=available,
        available=available,
        updated=desired if current else 0,
        current=current,
        available_condition=available >= desired,
    )


def observe(*deployments: DeploymentState, **kw: object) -> Observation:
    return Observation(generation=2, expected_parts=PARTS, deployments=deployments, **kw)  # type: ignore[arg-type]


def cond(status: DynamicModelStatus, type_: str) -> tuple[str, str]:
    c = status.condition(type_)  # type: ignore[arg-type]
    assert c is not None
    return c.status, c.reason


def test_pending_until_every_part_is_available_then_serving() -> None:
    first = compute_status(None, observe(deployment("inference", 0)), T0)
    assert first.phase == "Pending"
    assert cond(first, "Ready") == ("False", "PartsUnavailable")
    assert "joiner not created" in first.conditions[0].message
    ready = compute_status(
        first, observe(*(deployment(p) for p in PARTS)), T0 + timedelta(seconds=5)
    )
    assert ready.phase == "Serving" and ready.observed_generation == 2
    assert cond(ready, "Ready") == ("True", "AllPartsAvailable")
    assert cond(ready, "Degraded") == ("False", "AsExpected")
    assert ready.condition("Ready").last_transition_time == T0 + timedelta(seconds=5)  # type: ignore[union-attr]


def test_transition_time_moves_only_when_a_condition_flips() -> None:
    serving = compute_status(None, observe(*(deployment(p) for p in PARTS)), T0)
    again = compute_status(
        serving, observe(*(deployment(p) for p in PARTS)), T0 + timedelta(hours=1)
    )
    assert again.condition("Ready").last_transition_time == T0  # type: ignore[union-attr]


def test_lost_parts_after_serving_is_degraded() -> None:
    serving = compute_status(None, observe(*(deployment(p) for p in PARTS)), T0)
    lost = compute_status(
        serving, observe(deployment("inference", 0, 2), *(deployment(p) for p in PARTS[1:])), T0
    )
    assert lost.phase == "Degraded"
    assert cond(lost, "Degraded") == ("True", "PartsUnavailable")
    assert "inference" in lost.message


def test_invalid_spec_fails_with_the_message() -> None:
    status = compute_status(
        None, Observation(generation=3, invalid="spec.replicas.min: too big"), T0
    )
    assert status.phase == "Failed" and "spec.replicas.min" in status.message
    assert cond(status, "Ready") == ("False", "InvalidSpec")


def test_missing_secret_is_pending_with_the_reason() -> None:
    status = compute_status(
        None, observe(waiting_for="Secret ml/kafka-sasl does not exist yet"), T0
    )
    assert status.phase == "Pending" and "kafka-sasl" in status.message
    assert cond(status, "Ready") == ("False", "DependencyMissing")


def test_rollout_and_rolling_update_are_progressing() -> None:
    all_up = [deployment(p) for p in PARTS]
    canary = compute_status(
        None,
        observe(
            *all_up,
            rollout=RolloutStatus(stage="canary", weight=20, step=1),
            versions={"stable": "7", "candidate": "8"},
        ),
        T0,
    )
    assert canary.phase == "Progressing"
    assert cond(canary, "Progressing") == ("True", "RolloutCanary")
    assert (canary.stable_version, canary.candidate_version, canary.rollout.weight) == (
        "7",
        "8",
        20,
    )
    rolling = compute_status(None, observe(deployment("inference", current=False), *all_up[1:]), T0)
    assert cond(rolling, "Progressing") == ("True", "RollingUpdate")
    aborted = compute_status(
        None, observe(*all_up, rollout=RolloutStatus(stage="aborted", reason="p99 above 50ms")), T0
    )
    assert cond(aborted, "Degraded") == ("True", "RolloutAborted")


def test_drift_condition() -> None:
    drift = DriftStatus(detected=True, kind="covariate", score=0.31, features=["amount"])
    status = compute_status(None, observe(*(deployment(p) for p in PARTS), drift=drift), T0)
    ok, reason = cond(status, "DriftDetected")
    assert (ok, reason) == ("True", "CovariateDrift")
    assert "amount" in status.condition("DriftDetected").message  # type: ignore[union-attr]


def test_patch_round_trips_and_clears_unset_fields() -> None:
    status = compute_status(None, observe(*(deployment(p) for p in PARTS)), T0)
    patch = to_patch(status)
    assert patch["candidateVersion"] is None  # merge patch: null deletes a stale value
    assert parse_status(patch) == status
    assert parse_status({"phase": "Nonsense"}) is None


def test_patch_writes_no_null_inside_a_list() -> None:
    """A list is replaced whole: a null in an item would be pruned by the API server,
    and the stored status would differ from the patch on every tick."""
    analysis = {"verdict": "inconclusive", "checks": [{"name": "p99", "value": None, "limit": 50}]}
    status = compute_status(
        None,
        observe(
            *(deployment(p) for p in PARTS),
            rollout=RolloutStatus(stage="shadow", last_analysis=analysis),
        ),
        T0,
    )
    patch = to_patch(status)
    assert patch["rollout"]["lastAnalysis"]["checks"] == [{"name": "p99", "limit": 50}]
    assert all(None not in c.values() for c in patch["conditions"])
    assert patch["candidateVersion"] is None  # outside lists a null still clears
    assert parse_status(patch) == status.model_copy(
        update={
            "rollout": status.rollout.model_copy(
                update={
                    "last_analysis": {
                        "verdict": "inconclusive",
                        "checks": [{"name": "p99", "limit": 50}],
                    }
                }
            )
        }
    )


def test_drift_is_detected_while_the_version_it_was_seen_on_serves() -> None:
    from driftline.api.events import DriftEvent
    from driftline.operator.backends import drift_status

    event = DriftEvent(
        event_id="e1",
        model="m",
        model_version="7",
        kind="covariate",
        detector="ks",
        detected_at=T0.timestamp(),
        score=0.4,
        features=["amount"],
    )
    assert drift_status(event, stable="7").detected
    assert not drift_status(event, stable="8").detected  # a newer version serves now
    assert drift_status(event, stable="8").last_detected_at == T0
    assert drift_status(None, stable="7") == DriftStatus()


def test_status_says_where_the_drift_reference_comes_from() -> None:
    """The drift monitor's note (Redis) reaches status, with or without a drift event."""
    from driftline.operator.backends import RedisBackends, drift_status

    note = "collecting from live traffic: 40 of 1000 predictions of version 1"
    assert drift_status(None, stable="1", reference=note).reference == note

    class Client:
        def mget(self, keys: list[str]) -> list[bytes | None]:
            assert keys[1].endswith(":drift:reference")
            return [None, note.encode()]

    backends = RedisBackends()
    backends.client = lambda connection: Client()  # type: ignore[method-assign]
    from driftline.common.connections import RedisConnection

    from .conftest import sample

    status = backends.drift(sample("minimal"), RedisConnection("redis://r:6379/0"), "1")
    assert status is not None and status.reference == note and not status.detected


def test_drift_condition_only_with_alert_in_on_drift() -> None:
    drift = DriftStatus(detected=True, kind="concept", score=0.4, last_detected_at=T0)
    parts = [deployment(p) for p in PARTS]
    quiet = compute_status(None, observe(*parts, drift=drift, drift_alert=False), T0)
    assert quiet.condition("DriftDetected") is None
    assert quiet.drift == drift  # status.drift still mirrors the monitor
    loud = compute_status(quiet, observe(*parts, drift=drift, drift_alert=True), T0)
    assert cond(loud, "DriftDetected") == ("True", "ConceptDrift")
    # A spec that cannot be read keeps the choice the last readable one made.
    assert (
        compute_status(quiet, Observation(3, invalid="bad"), T0).condition("DriftDetected") is None
    )
    assert compute_status(loud, Observation(3, invalid="bad"), T0).condition("DriftDetected")


def test_one_drift_alert_per_drift_event() -> None:
    from driftline.operator.status_report import drift_alert

    parts = [deployment(p) for p in PARTS]
    calm = compute_status(None, observe(*parts, drift_alert=True), T0)
    assert drift_alert(None, calm) is None
    first = DriftStatus(detected=True, kind="covariate", score=0.31, last_detected_at=T0)
    drifting = compute_status(calm, observe(*parts, drift=first, drift_alert=True), T0)
    message = drift_alert(calm, drifting)
    assert message == "covariate drift (score 0.31)"
    again = compute_status(drifting, observe(*parts, drift=first, drift_alert=True), T0)
    assert drift_alert(drifting, again) is None  # the same event at the next tick
    later = first.model_copy(update={"last_detected_at": T0 + timedelta(minutes=10)})
    newer = compute_status(again, observe(*parts, drift=later, drift_alert=True), T0)
    assert drift_alert(again, newer) == message  # the monitor reported it again
    silent = compute_status(calm, observe(*parts, drift=first, drift_alert=False), T0)
    assert drift_alert(calm, silent) is None  # onDrift without alert


def test_parts_at_zero_are_ready_and_a_part_kept_at_one_is_explained() -> None:
    idle = [deployment(p, available=0, desired=0) for p in ("joiner", "trainer", "drift")]
    note = "inference keeps 1 replica(s): scaling it to zero needs KEDA's HTTP add-on"
    status = compute_status(None, observe(deployment("inference"), *idle, scaling_note=note), T0)
    assert status.phase == "Serving"
    ready = status.condition("Ready")
    assert ready is not None and ready.message.endswith(note)
    assert "joiner 0/0" in ready.message


def test_a_trainer_statefulset_counts_as_the_trainer_part() -> None:
    """With `training.workers` > 1 the trainer is a StatefulSet: its state reads like
    a Deployment's, so the model is Serving once all its ranks are available."""

    def statefulset(ready: int, update: str = "r2", current: str = "r2") -> dict[str, object]:
        return {
            "metadata": {"name": "m-trainer", "generation": 3,
                         "labels": {"app.kubernetes.io/component": "trainer"}},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "readyReplicas": ready,
                       "availableReplicas": ready, "currentReplicas": 2, "updatedReplicas": 0,
                       "currentRevision": current, "updateRevision": update},
        }  # fmt: skip

    both = workload_state("StatefulSet", statefulset(ready=2))
    assert (both.part, both.is_available, both.is_rolling) == ("trainer", True, False)
    one = workload_state("StatefulSet", statefulset(ready=1))
    assert not one.is_available
    rolling = workload_state("StatefulSet", statefulset(ready=2, current="r1"))
    assert rolling.is_rolling
    others = [deployment(p) for p in PARTS if p != "trainer"]
    serving = compute_status(None, observe(*others, both), T0)
    assert serving.phase == "Serving"
    waiting = compute_status(None, observe(*others, one), T0)
    assert waiting.phase != "Serving" and "trainer" in (waiting.message or "")
