"""The worst-segment gate: better overall is not enough when one segment loses."""

from __future__ import annotations

import msgspec

from driftline.rollout import Evidence, SegmentEvidence, VersionCounters, analyze, status_of
from driftline.rollout.evidence import segment_key
from tests.rollout.builders import World, evidence, policy


def labeled(n: int, accuracy: float) -> VersionCounters:
    return VersionCounters(labeled=n, correct=accuracy * n, abs_error=(1 - accuracy) * n)


def with_segments(window: Evidence, **groups: tuple[int, float, int, float]) -> Evidence:
    """`FR=(candidate n, accuracy, stable n, accuracy)` per value of segment `country`."""
    return msgspec.structs.replace(
        window,
        segments={
            segment_key("country", value): SegmentEvidence(
                candidate=labeled(cn, ca), stable=labeled(sn, sa)
            )
            for value, (cn, ca, sn, sa) in groups.items()
        },
    )


GATED = {"segments": ("country",), "max_segment_drop": 0.05, "min_segment_labeled": 50}


def judge(window: Evidence, stage: str = "canary", **overrides: object):  # type: ignore[no-untyped-def]
    return analyze(
        window, policy(**{**GATED, **overrides}), stage=stage, weight=50, reference=None, at=0.0
    )


def test_better_overall_but_worse_on_one_segment_fails_and_names_it() -> None:
    window = with_segments(
        evidence(400, accuracy=0.95, stable_accuracy=0.90),
        FR=(100, 0.70, 100, 0.85),  # loses 15 points here
        DE=(300, 1.0, 300, 0.92),
    )
    result = judge(window)
    assert result.verdict == "fail"
    assert result.worst_segment == "country=FR"
    assert "worst segment country=FR" in result.reason
    check = next(c for c in result.checks if c.name == "segments")
    assert check.value is not None and abs(check.value - 0.15) < 1e-9 and check.limit == 0.05
    # Without the gate, the same evidence passes.
    assert judge(window, max_segment_drop=None).verdict == "pass"


def test_too_few_labels_on_a_segment_is_inconclusive_never_success() -> None:
    window = with_segments(evidence(400), FR=(20, 0.95, 20, 0.9), DE=(380, 0.9, 380, 0.9))
    result = judge(window)
    assert result.verdict == "inconclusive"
    assert "country=FR (20/20)" in result.reason
    assert not result.gathered
    # No segment measured at all: inconclusive too.
    assert judge(evidence(400)).verdict == "inconclusive"


def test_a_loss_shows_even_while_other_segments_wait() -> None:
    window = with_segments(evidence(400), FR=(200, 0.5, 200, 0.9), DE=(10, 0.9, 10, 0.9))
    assert judge(window).verdict == "fail"


def test_within_the_limit_passes_and_names_the_worst() -> None:
    window = with_segments(evidence(400), FR=(200, 0.87, 200, 0.9), DE=(200, 0.93, 200, 0.9))
    result = judge(window)
    assert result.verdict == "pass"
    assert result.worst_segment == "country=FR"
    assert result.stable_segments == {"country=FR": 0.9, "country=DE": 0.9}


def test_regression_compares_mae_relative_to_the_stable() -> None:
    worse = VersionCounters(labeled=100, abs_error=120.0)  # MAE 1.2
    stable = VersionCounters(labeled=100, abs_error=100.0)  # MAE 1.0
    window = msgspec.structs.replace(
        evidence(400),
        segments={"age=<30": SegmentEvidence(candidate=worse, stable=stable)},
    )
    result = judge(window, task="regression", max_quality_drop=1.0)
    assert result.verdict == "fail" and result.worst_segment == "age=<30"
    assert (
        judge(window, task="regression", max_quality_drop=1.0, max_segment_drop=0.25).verdict
        == "pass"
    )


def test_the_stable_reference_stands_in_per_segment() -> None:
    # 100 % canary: the stable version serves nothing, its last measurement stands in.
    window = with_segments(evidence(400, stable_labeled=0), FR=(100, 0.7, 0, 0.0))
    result = analyze(
        window,
        policy(**GATED),
        stage="canary",
        weight=100,
        reference=0.9,
        at=0.0,
        segment_references={"country=FR": 0.9},
    )
    assert result.verdict == "fail" and result.worst_segment == "country=FR"


def test_segment_evidence_differences_and_lost_counts() -> None:
    before = with_segments(evidence(100), FR=(50, 0.9, 50, 0.9))
    after = with_segments(evidence(200), FR=(120, 0.9, 110, 0.9), DE=(5, 1.0, 0, 0.0))
    diff = after.minus(before)
    assert diff.segments["country=FR"].candidate.labeled == 70
    assert diff.segments["country=DE"].candidate.labeled == 5
    assert not after.lost_counts(before)
    shrunk = with_segments(evidence(200), FR=(40, 0.9, 110, 0.9))
    assert shrunk.lost_counts(before)


def rollout(fr_candidate_accuracy: float) -> World:
    """A shadow-then-canary rollout where the candidate is better overall (0.95 vs
    0.90); on country=FR it reaches `fr_candidate_accuracy` against the stable's 0.90."""
    world = World(policy=policy(**GATED))
    world.propose("2")
    for _ in range(6):
        if not world.state.active:
            break
        world.add(
            with_segments(
                evidence(300, accuracy=0.95, stable_accuracy=0.90),
                FR=(100, fr_candidate_accuracy, 100, 0.90),
                DE=(200, 0.99, 200, 0.90),
            )
        )
        world.tick(11.0)
    return world


def test_a_candidate_worse_on_one_segment_is_not_promoted() -> None:
    world = rollout(fr_candidate_accuracy=0.80)
    assert world.state.stage == "aborted"
    assert "worst segment country=FR" in world.state.reason
    assert world.aliases["champion"] == "1"
    assert world.state.last_analysis is not None
    assert world.state.last_analysis.worst_segment == "country=FR"
    status = status_of(world.state)
    assert "country=FR" in status.reason
    assert (
        status.last_analysis is not None and status.last_analysis["worst_segment"] == "country=FR"
    )
    assert any("country=FR" in e.event.reason for e in world.events)


def test_a_candidate_fine_on_every_segment_is_promoted() -> None:
    world = rollout(fr_candidate_accuracy=0.88)  # within the 0.05 limit
    assert world.state.stage == "promoted", world.state.reason
    assert world.aliases["champion"] == "2"
