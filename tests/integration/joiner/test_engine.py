"""Cases of the join engine the property test does not reach on purpose."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.api.events import LabeledExample, Outcome, Prediction, encode
from driftline.api.spec import SegmentSpec
from driftline.joiner.engine import JoinEngine
from driftline.joiner.recovery import settle_outboxes
from driftline.joiner.segments import segments_of
from driftline.joiner.store import ARRIVAL_NEW, Arrival, JoinStore

pytestmark = pytest.mark.integration

WINDOW, GRACE, NOW = 100.0, 30.0, 70_000.0


def engine(redis_client: Any, task: str = "classification") -> JoinEngine:
    store = JoinStore(redis_client, "eng", "m", window=WINDOW, grace=GRACE)
    return JoinEngine(store, task, agreement_tolerance=0.1)


def pred(rid: str, variant: str = "stable", output: float = 1.0, version: str = "1") -> Arrival:
    p = Prediction(
        request_id=rid, model="m", model_version=version, variant=variant,  # type: ignore[arg-type]
        features={"x": 1.0}, output=output, ts=1.0,
    )  # fmt: skip
    return Arrival(rid, f"p:{variant}", encode(p).decode(), "predictions")


def out(rid: str, label: float = 1.0) -> Arrival:
    o = Outcome(request_id=rid, label=label, ts=2.0)
    return Arrival(rid, "o", encode(o).decode(), "outcomes")


def test_a_crashed_batch_is_settled_from_its_outbox_after_the_horizon(redis_client: Any) -> None:
    first = engine(redis_client)
    first.process([pred("r")], NOW, {})
    first.absorb([out("r")], NOW + 10, {})  # claimed, then the process dies
    # It comes back after the window and the grace period: the claims are still
    # owed, and settled before the source is read again.
    topic: list[LabeledExample] = []
    later = NOW + WINDOW + GRACE + 5
    restarted = engine(redis_client)
    recovered = settle_outboxes(restarted, ["outcomes"], lambda _: set(), topic.extend, later)
    assert [e.request_id for e in topic] == ["r"]
    assert recovered.result.quality == {
        ("1", "stable"): {"count": 1.0, "correct": 1.0},
    }
    counters = restarted.store.quality.counters("1", "stable")
    assert counters.read(redis_client, 600, now=later) == {"count": 1.0, "correct": 1.0}
    # Settled once: a second recovery finds nothing, a replay starts a new request.
    assert (
        settle_outboxes(restarted, ["outcomes"], lambda _: set(), topic.extend, later).resent == 0
    )
    replay = restarted.process([out("r")], later, {})
    assert replay.statuses == [ARRIVAL_NEW]
    assert replay.examples == []
    assert len(topic) == 1


def test_regression_scores_errors_and_agreement_within_tolerance(redis_client: Any) -> None:
    joiner = engine(redis_client, "regression")
    result = joiner.process(
        [pred("r", "stable", 10.0, "1"), pred("r", "shadow", 10.5, "2"), out("r", 12.0)], NOW, {}
    )
    assert result.quality == {
        ("1", "stable"): {"count": 1.0, "abs_error": 2.0, "sq_error": 4.0},
        ("2", "shadow"): {"count": 1.0, "abs_error": 1.5, "sq_error": 2.25},
    }
    assert result.agreement == {("1", "2"): [1, 1]}  # |10 - 10.5| <= 0.1 * 10.5
    quality = joiner.store.quality
    assert quality.counters("2", "shadow").read(redis_client, 60, now=NOW) == {
        "count": 1.0, "abs_error": 1.5, "sq_error": 2.25,
    }  # fmt: skip


def test_one_batch_of_thousands_of_joins(redis_client: Any) -> None:
    joiner = engine(redis_client)
    n = 2500
    arrivals = [a for i in range(n) for a in (pred(f"r{i}", output=i % 2), out(f"r{i}"))]
    result = joiner.process(arrivals, NOW, {0: 7, 1: 3})
    assert len(result.examples) == n
    outbox = joiner.store.read_outbox("outcomes")
    assert outbox is not None
    assert len(outbox.claims) == n
    assert outbox.start_offsets == {0: 7, 1: 3}
    counters = joiner.store.quality.counters("1", "stable").read(redis_client, 60, now=NOW)
    assert counters == {"count": n, "correct": n / 2}
    joiner.store.trim_outboxes(result.outboxes)
    assert joiner.store.read_outbox("outcomes") is None
    assert joiner.sweep(NOW + WINDOW + 1).pending == 0  # all joined: nothing left to expire


def segmented(redis_client: Any, max_values: int = 2) -> JoinEngine:
    store = JoinStore(redis_client, "eng", "seg", window=WINDOW, grace=GRACE)
    segments = segments_of(
        [
            SegmentSpec(name="age", bins=[30]),
            SegmentSpec(name="country", max_values=max_values, protected=True),
        ]
    )
    return JoinEngine(store, "classification", segments=segments, binary=True)


def seg_pred(rid: str, age: float, country: str, output: float = 1.0) -> Arrival:
    p = Prediction(
        request_id=rid, model="seg", model_version="1", variant="stable",
        features={"age": age, "country": country}, output=output, ts=1.0,
    )  # fmt: skip
    return Arrival(rid, "p:stable", encode(p).decode(), "predictions")


def test_segment_quality_is_kept_per_group_with_a_cap_across_replicas(redis_client: Any) -> None:
    first, second = segmented(redis_client), segmented(redis_client)
    first.process(
        [seg_pred("a", 20, "FR"), out("a", 1), seg_pred("b", 40, "DE", 0), out("b", 1)], NOW, {}
    )
    # Another replica: the cap of 2 is full, so a third country counts as "other".
    result = second.process(
        [seg_pred("c", 50, "US"), out("c", 0), seg_pred("d", 25, "FR"), out("d", 1)], NOW, {}
    )
    assert result.folded == {"country": 1}
    assert set(result.segments) == {
        ("1", "stable", "age", ">=30"), ("1", "stable", "age", "<30"),
        ("1", "stable", "country", "other"), ("1", "stable", "country", "FR"),
    }  # fmt: skip
    quality = first.store.quality
    country = quality.read_segment(redis_client, "1", "stable", "country", 60, now=NOW)
    assert set(country) == {"FR", "DE", "other"}
    assert (country["FR"].count, country["FR"].accuracy, country["FR"].recall) == (2, 1.0, 1.0)
    assert (country["DE"].count, country["DE"].recall, country["DE"].positive_rate) == (1, 0.0, 0.0)
    assert (country["other"].count, country["other"].precision) == (1, 0.0)  # 1 predicted, 0 true
    age = quality.read_segment(redis_client, "1", "stable", "age", 60, now=NOW)
    assert {v: s.count for v, s in age.items()} == {"<30": 2, ">=30": 2}
    assert redis_client.smembers(quality.segment_values_key("country")) == {b"FR", b"DE"}


def test_segment_counters_of_a_crashed_batch_are_added_once(redis_client: Any) -> None:
    first = segmented(redis_client, max_values=5)
    first.process([seg_pred("r", 20, "FR")], NOW, {})
    first.absorb([out("r")], NOW + 1, {})  # claimed, then the process dies
    topic: list[LabeledExample] = []
    restarted = segmented(redis_client, max_values=5)
    for _ in range(2):  # a second recovery finds nothing owed
        settle_outboxes(restarted, ["outcomes"], lambda _: set(), topic.extend, NOW + 2)
    country = restarted.store.quality.read_segment(
        redis_client, "1", "stable", "country", 60, now=NOW + 2
    )
    assert country["FR"].count == 1
    assert len(topic) == 1
