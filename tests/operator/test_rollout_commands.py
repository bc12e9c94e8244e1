"""A person's rollout decision, read from the DynamicModel's annotations."""

from __future__ import annotations

from driftline.operator.rollout_commands import ANNOTATION, REASON_ANNOTATION, requested
from driftline.rollout.snapshot import Command


def test_no_annotation_asks_nothing() -> None:
    assert requested({}, "7") is None


def test_a_bare_action_is_for_the_candidate_rolling_out() -> None:
    asked = requested({ANNOTATION: "approve"}, "7")
    assert asked is not None
    assert asked.command == Command(action="approve", version="7", reason="approve by annotation")


def test_a_named_version_and_a_reason_are_kept() -> None:
    asked = requested({ANNOTATION: " abort:6 ", REASON_ANNOTATION: "p99 too high"}, "7")
    assert asked is not None
    assert asked.command == Command(action="abort", version="6", reason="p99 too high")


def test_what_cannot_be_read_says_why() -> None:
    bad = requested({ANNOTATION: "promote"}, "7")
    assert bad is not None and bad.command is None and "use approve, abort" in bad.problem
    idle = requested({ANNOTATION: "approve"}, None)
    assert idle is not None and idle.command is None
    assert "no candidate is rolling out" in idle.problem
