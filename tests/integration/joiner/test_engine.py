"""Cases of the join engine the property test does not reach on purpose."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.api.events import Outcome, Prediction, encode
from driftline.joiner.engine import JoinEngine, Source
from driftline.joiner.store import ARRIVAL_DUPLICATE, ARRIVAL_NEW, Arrival, JoinStore

pytestmark = pytest.mark.integration

WINDOW, GRACE, NOW = 100.0, 30.0, 70_000.0


def engine(redis_client: Any, task: str = "classification") -> JoinEngine:
    store = JoinStore(redis_client, "eng", "m", window=WINDOW, grace=GRACE)
    return JoinEngine(store, task, agreement_tolerance=0.1)


def pred(rid: str, variant: str = "stable", output: float = 1.0, version: str = "1") -> Source:
    p = Prediction(
        request_id=rid, model="m", model_version=version, variant=variant,  # type: ignore[arg-type]
        features={"x": 1.0}, output=output, ts=1.0,
    )  # fmt: skip
    return Source(Arrival(rid, f"p:{variant}", encode(p)), "predictions")


def out(rid: str, label: float = 1.0) -> Source:
    return Source(
        Arrival(rid, "o", encode(Outcome(request_id=rid, label=label, ts=2.0))), "outcomes"
    )


def test_a_crashed_batch_replayed_after_the_horizon_still_joins_once(redis_client: Any) -> None:
    first = engine(redis_client)
    first.process([pred("r")], NOW, {})
    first.absorb([out("r")], NOW + 10)  # the process dies before phase 2
    # It comes back after the window and the grace period: the join is still owed.
    replay = engine(redis_client).process([out("r")], NOW + WINDOW + GRACE + 5, {})
    assert replay.statuses == [ARRIVAL_DUPLICATE]
    assert [e.request_id for e in replay.examples] == ["r"]
    assert replay.expired_predictions == replay.expired_outcomes == 0
    again = engine(redis_client).process([out("r")], NOW + WINDOW + GRACE + 6, {})
    assert again.examples == []
    # Settled, the request is forgotten past the horizon like any other.
    fresh = engine(redis_client).process([pred("r")], NOW + WINDOW + GRACE + 7, {})
    assert fresh.statuses == [ARRIVAL_NEW]


def test_regression_scores_errors_and_agreement_within_tolerance(redis_client: Any) -> None:
    joiner = engine(redis_client, "regression")
    result = joiner.process(
        [pred("r", "stable", 10.0, "1"), pred("r", "shadow", 10.5, "2"), out("r", 12.0)], NOW, {}
    )
    assert {(s.variant, tuple(sorted(s.fields.items()))) for s in result.scores} == {
        ("stable", (("abs_error", 2.0), ("count", 1.0), ("sq_error", 4.0))),
        ("shadow", (("abs_error", 1.5), ("count", 1.0), ("sq_error", 2.25))),
    }
    assert [(a.agreed, a.stable_version, a.candidate_version) for a in result.agreements] == [
        (True, "1", "2")  # |10 - 10.5| <= 0.1 * 10.5
    ]
    quality = joiner.store.quality
    assert quality.counters("2", "shadow").read(redis_client, 60, now=NOW) == {
        "count": 1.0, "abs_error": 1.5, "sq_error": 2.25,
    }  # fmt: skip


def test_one_batch_of_thousands_of_joins(redis_client: Any) -> None:
    joiner = engine(redis_client)
    n = 2500
    sources = [s for i in range(n) for s in (pred(f"r{i}", output=i % 2), out(f"r{i}"))]
    result = joiner.process(sources, NOW, {0: 7, 1: 3})
    assert len(result.examples) == n
    outbox = joiner.store.read_outbox("outcomes")
    assert outbox is not None
    assert len(outbox.request_ids) == n
    assert outbox.start_offsets == {0: 7, 1: 3}
    counters = joiner.store.quality.counters("1", "stable").read(redis_client, 60, now=NOW)
    assert counters == {"count": n, "correct": n / 2}
    joiner.store.clear_outboxes(result.outboxes)
    assert joiner.store.read_outbox("outcomes") is None
    assert joiner.sweep(NOW + WINDOW + 1).pending == 0  # all joined: nothing left to expire
