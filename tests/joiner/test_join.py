"""What claimed work amounts to: scores, agreement and the labeled example."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from driftline.api.events import Outcome, Prediction, Variant, encode
from driftline.api.spec import SegmentSpec
from driftline.common.redis_state import quality_fields, quality_sums
from driftline.joiner.join import Scoring, Share, agrees, plan_claim
from driftline.joiner.segments import Segment


def prediction(
    variant: Variant, output: float, version: str, scores: list[float] | None = None
) -> str:
    return encode(
        Prediction(
            request_id="r", model="m", model_version=version, variant=variant,
            features={"x": 1.5, "c": "a"}, output=output, ts=10.0, entity_id="e1", scores=scores,
        )
    ).decode()  # fmt: skip


def outcome(label: float) -> str:
    return encode(Outcome(request_id="r", label=label, ts=20.0)).decode()


def test_scores_each_claimed_variant_and_builds_the_served_example() -> None:
    state = {
        "t": "100.0",
        "p:stable": prediction("stable", 1, "3", [0.2, 0.8]),
        "p:shadow": prediction("shadow", 0, "4"),
        "o": outcome(1),
        "e": "stable",
    }
    share = Share()
    example = plan_claim(
        "r", state, ["s:stable", "s:shadow", "e", "a"], Scoring("classification", 0.0), share
    )
    assert set(share.quality) == {("3", "stable"), ("4", "shadow")}
    stable = share.quality[("3", "stable")]
    assert (stable["count"], stable["correct"], stable["log_loss_count"]) == (1.0, 1.0, 1.0)
    assert stable["log_loss"] == pytest.approx(-math.log(0.8))
    assert share.quality[("4", "shadow")] == {"count": 1.0, "correct": 0.0}
    assert share.agreement == {("3", "4"): [1, 0]}  # compared once, disagreed
    assert example is not None
    assert (example.variant, example.model_version, example.label, example.output) == (
        "stable", "3", 1.0, 1.0,
    )  # fmt: skip
    assert (example.ts_prediction, example.ts_label, example.entity_id) == (10.0, 20.0, "e1")
    assert example.features == {"x": 1.5, "c": "a"}


def test_only_what_was_claimed() -> None:
    state = {"p:stable": prediction("stable", 1, "3"), "o": outcome(0), "e": "stable"}
    share = Share()
    example = plan_claim("r", state, ["e"], Scoring("classification", 0.0), share)
    assert share == Share()
    assert example is not None


def test_the_example_comes_from_the_variant_the_claim_names() -> None:
    state = {"p:candidate": prediction("candidate", 0, "4"), "o": outcome(0), "e": "candidate"}
    example = plan_claim("r", state, ["e"], Scoring("classification", 0.0), Share())
    assert example is not None
    assert (example.variant, example.model_version) == ("candidate", "4")


def test_an_unreadable_state_yields_nothing_and_does_not_raise() -> None:
    state = {"p:stable": "{not json", "o": outcome(1), "e": "stable"}
    share = Share()
    assert plan_claim("r", state, ["s:stable", "e"], Scoring("classification", 0.0), share) is None
    assert share == Share()


@pytest.mark.parametrize(
    ("task", "a", "b", "tolerance", "expected"),
    [
        ("classification", 1.0, 1.0, 0.0, True),
        ("classification", 1.0, 2.0, 0.5, False),
        ("regression", 10.0, 10.5, 0.1, True),
        ("regression", 10.0, 12.0, 0.1, False),
        ("regression", 0.0, 0.0, 0.0, True),
    ],
)
def test_agreement(task: str, a: float, b: float, tolerance: float, expected: bool) -> None:
    assert agrees(task, a, b, tolerance) is expected


def test_sums_add_up_over_claims() -> None:
    share = Share()
    for output, label in ((1, 1), (0, 1), (1, 1)):
        state = {"p:stable": prediction("stable", output, "3"), "o": outcome(label)}
        plan_claim("r", state, ["s:stable"], Scoring("classification", 0.0), share)
    assert share.quality == {("3", "stable"): {"count": 3.0, "correct": 2.0}}


def test_an_explored_prediction_is_scored_apart_from_the_version_s_own() -> None:
    """The rollout reads `stable` and `candidate`: an explored row's outcome followed the
    exploration policy's decision, so it counts under `explored` (and in no segment)."""
    explored = msgspec.structs.replace(
        msgspec.json.decode(prediction("stable", 1, "3"), type=Prediction),
        explored=True,
        served=0.0,
        propensity=0.05,
    )
    state = {"p:stable": encode(explored).decode(), "o": outcome(1), "e": "stable"}
    share = Share()
    segments = (Segment.from_spec(SegmentSpec(name="x", bins=[0.0, 1.0])),)
    scoring = Scoring("classification", 0.0, segments=segments)
    example = plan_claim("r", state, ["s:stable", "e"], scoring, share)
    assert set(share.quality) == {("3", "explored")}
    assert share.quality[("3", "explored")]["correct"] == 1.0  # the model's own answer
    assert share.segments == {}
    assert example is not None and example.explored and example.propensity == 0.05


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_sums_of_a_group_are_those_of_quality_fields_one_at_a_time(task: str) -> None:
    rng = random.Random(3)
    scored: list[tuple[float, float, list[float] | None]] = []
    for _ in range(500):
        output = float(rng.randrange(3)) if task == "classification" else rng.uniform(-5, 5)
        label = float(rng.randrange(3)) if task == "classification" else rng.uniform(-5, 5)
        kind = rng.randrange(4)  # no scores, too few for the label, some out of [0, 1], fine
        scores = (
            None if kind == 0
            else [rng.random()] if kind == 1
            else [rng.uniform(-0.5, 1.5) for _ in range(3)] if kind == 2
            else [rng.random() for _ in range(3)]
        )  # fmt: skip
        scored.append((output, label, scores))
    one_at_a_time: dict[str, float] = {"count": 2.0}
    for output, label, scores in scored:  # each record's increments, added in order
        for name, value in quality_fields(task, output, label, scores).items():
            one_at_a_time[name] = one_at_a_time.get(name, 0.0) + value
    at_once: dict[str, float] = {"count": 2.0}
    quality_sums(at_once, task, scored[:200])
    quality_sums(at_once, task, scored[200:])
    assert at_once == one_at_a_time  # bit for bit, the same fields
    empty: dict[str, float] = {}
    quality_sums(empty, task, [])
    assert empty == ({"count": 0.0, "correct": 0.0} if task == "classification" else {
        "count": 0.0, "abs_error": 0.0, "sq_error": 0.0})  # fmt: skip
