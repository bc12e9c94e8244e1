"""One shift makes one event: cooldown, explained detections, restarts."""

from __future__ import annotations

from driftline.drift.event_policy import Detection, EventPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detection(kind: str = "covariate", trigger: str = "r1") -> Detection:
    return Detection(
        kind=kind,
        detector="scipy:ks",
        model_version="3",
        score=0.4,  # type: ignore[arg-type]
        features=["x1"],
        p_value=1e-6,
        trigger=trigger,
    )


def test_repeats_wait_for_the_cooldown() -> None:
    clock = Clock()
    policy = EventPolicy("m", cooldown_seconds=60, clock=clock)
    first = policy.decide(detection())
    assert first is not None and first.kind == "covariate" and first.features == ["x1"]
    clock.now += 59
    assert policy.decide(detection(trigger="r2")) is None
    clock.now += 2
    assert policy.decide(detection(trigger="r3")) is not None


def test_each_kind_has_its_own_cooldown_but_explained_kinds_wait() -> None:
    clock = Clock()
    policy = EventPolicy("m", cooldown_seconds=60, clock=clock)
    assert policy.decide(detection("covariate")) is not None
    assert policy.decide(detection("prediction")) is None  # the covariate shift explains it
    assert policy.decide(detection("concept")) is not None  # the trainer reacts differently
    assert policy.decide(detection("label")) is None  # the concept change explains it
    clock.now += 61
    assert policy.decide(detection("prediction")) is not None


def test_a_restart_keeps_the_cooldown() -> None:
    clock = Clock()
    before = EventPolicy("m", cooldown_seconds=60, clock=clock)
    sent = before.decide(detection())
    assert sent is not None
    after = EventPolicy("m", cooldown_seconds=60, clock=clock)
    after.restore(sent)
    clock.now += 30
    assert after.decide(detection(trigger="r9")) is None


def test_event_ids_are_stable_under_replay() -> None:
    a = EventPolicy("m", 60, clock=Clock()).decide(detection(trigger="r7"))
    b = EventPolicy("m", 60, clock=Clock()).decide(detection(trigger="r7"))
    c = EventPolicy("m", 60, clock=Clock()).decide(detection(trigger="r8"))
    assert a is not None and b is not None and c is not None
    assert a.event_id == b.event_id != c.event_id


def test_events_are_alerts_only_when_on_drift_has_alert() -> None:
    quiet = EventPolicy("m", 60, clock=Clock()).decide(detection())
    loud = EventPolicy("m", 60, clock=Clock(), alerting=True).decide(detection())
    assert quiet is not None and quiet.alerting is False
    assert loud is not None and loud.alerting is True
