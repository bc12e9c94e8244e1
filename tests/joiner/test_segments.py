"""Segment groups and the quality arithmetic per group."""

from __future__ import annotations

import pytest

from driftline.api.events import Outcome, Prediction, encode
from driftline.api.spec import SegmentSpec
from driftline.common.redis_state import (
    SegmentStats,
    segment_field,
    segment_fields,
    split_segment_fields,
)
from driftline.joiner.join import Scoring, Share, plan_claim
from driftline.joiner.segments import Segment, bin_labels, fairness_gaps, place_all, segments_of


def test_numeric_values_fall_in_their_bins() -> None:
    age = Segment.from_spec(SegmentSpec(name="age", bins=[18, 30, 50.5]))
    assert bin_labels([18, 30, 50.5]) == ["<18", "[18,30)", "[30,50.5)", ">=50.5"]
    assert [age.place(v) for v in (3, 18, 29.99, 30, 50.5, 1e9)] == [
        "<18", "[18,30)", "[18,30)", "[30,50.5)", ">=50.5", ">=50.5",
    ]  # fmt: skip
    assert [age.place(v) for v in (None, "x", float("nan"), True)] == ["missing"] * 4
    assert not age.admits


def test_categorical_values_by_value_listed_or_capped() -> None:
    listed = Segment.from_spec(SegmentSpec(name="country", values=["FR", "DE"]))
    assert [listed.place(v) for v in ("FR", "DE", "US", None, "")] == [
        "FR", "DE", "other", "missing", "missing",
    ]  # fmt: skip
    assert not listed.admits
    capped = Segment.from_spec(SegmentSpec(name="country", max_values=3))
    assert capped.admits and capped.max_values == 3
    assert capped.place(5) == "5"  # the integer 5 is the category "5"...
    assert capped.place(5.0) == "missing"  # ...5.0 is no category
    assert capped.place("x" * 100) == "x" * 64  # a label stays short


def test_every_segment_places_a_prediction() -> None:
    segments = segments_of(
        [SegmentSpec(name="age", bins=[30]), SegmentSpec(name="country", protected=True)]
    )
    assert place_all(segments, {"age": 40, "country": "FR"}) == [
        ("age", ">=30"), ("country", "FR"),
    ]  # fmt: skip
    assert segments[1].protected


def test_segment_fields_binary_classification() -> None:
    tp = segment_fields("classification", True, 1, 1)
    fp = segment_fields("classification", True, 1, 0)
    fn = segment_fields("classification", True, 0, 1)
    tn = segment_fields("classification", True, 0, 0)
    assert tp == {"count": 1, "correct": 1, "predicted_positive": 1, "label_positive": 1,
                  "true_positive": 1}  # fmt: skip
    assert (fp["correct"], fp["predicted_positive"], fp["true_positive"]) == (0, 1, 0)
    assert (fn["correct"], fn["label_positive"], fn["true_positive"]) == (0, 1, 0)
    assert (tn["correct"], tn["predicted_positive"], tn["label_positive"]) == (1, 0, 0)
    total: dict[str, float] = {}
    for fields in (tp, tp, fp, fn, tn):
        for name, value in fields.items():
            total[name] = total.get(name, 0.0) + value
    stats = SegmentStats.from_fields(total)
    assert stats.accuracy == pytest.approx(3 / 5)
    assert stats.precision == pytest.approx(2 / 3)  # tp / predicted positive
    assert stats.recall == pytest.approx(2 / 3)  # tp / actual positive
    assert stats.positive_rate == pytest.approx(3 / 5)


def test_segment_fields_multiclass_and_regression() -> None:
    assert segment_fields("classification", False, 2, 2) == {"count": 1.0, "correct": 1.0}
    assert segment_fields("regression", False, 2.5, 4.0) == {"count": 1.0, "abs_error": 1.5}
    stats = SegmentStats.from_fields({"count": 4, "abs_error": 6})
    assert stats.mae == 1.5
    assert SegmentStats().accuracy is None and SegmentStats().mae is None


def test_segment_fields_round_trip_through_hash_fields() -> None:
    totals = {segment_field("a|b", "count"): 2.0, segment_field("FR", "correct"): 1.0}
    assert split_segment_fields(totals) == {"a|b": {"count": 2.0}, "FR": {"correct": 1.0}}


def test_fairness_gaps_between_values_with_enough_samples() -> None:
    stats = {
        "a": SegmentStats(count=100, predicted_positive=50, label_positive=40, true_positive=36),
        "b": SegmentStats(count=100, predicted_positive=20, label_positive=50, true_positive=25),
        "c": SegmentStats(count=5, predicted_positive=5, label_positive=5, true_positive=5),
        "other": SegmentStats(count=500, predicted_positive=0, label_positive=100),
    }
    gaps = fairness_gaps(stats, min_samples=40)
    assert gaps.parity == pytest.approx(0.5 - 0.2)
    assert gaps.opportunity == pytest.approx(0.9 - 0.5)
    assert fairness_gaps({"a": stats["a"]}, 40).parity is None  # a gap needs two values
    assert fairness_gaps(stats, 1000) == fairness_gaps({}, 1)


def test_a_scored_prediction_counts_in_its_segment_groups() -> None:
    def prediction(variant: str, output: float) -> str:
        return encode(
            Prediction(
                request_id="r", model="m", model_version="3", variant=variant,  # type: ignore[arg-type]
                features={"age": 20, "country": "FR"}, output=output, ts=1.0,
            )
        ).decode()  # fmt: skip

    state = {
        "p:stable": prediction("stable", 1),
        "p:shadow": prediction("shadow", 0),
        "o": encode(Outcome(request_id="r", label=1, ts=2.0)).decode(),
        "e": "stable",
    }
    segments = segments_of([SegmentSpec(name="age", bins=[18, 30]), SegmentSpec(name="country")])
    share = Share()
    plan_claim(
        "r", state, ["s:stable", "s:shadow"], Scoring("classification", 0.0, segments, True), share
    )
    assert share.segments[("3", "stable", "age", "[18,30)")] == {
        "count": 1, "correct": 1, "predicted_positive": 1, "label_positive": 1, "true_positive": 1,
    }  # fmt: skip
    assert share.segments[("3", "shadow", "country", "FR")]["correct"] == 0
    assert len(share.segments) == 4
