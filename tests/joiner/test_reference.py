"""The reference join the property tests rely on, checked on hand-made cases."""

from __future__ import annotations

from driftline.api.events import Outcome, Prediction, encode
from tests.joiner.reference import DUPLICATE, LATE, NEW, ReferenceJoin


def p(rid: str, variant: str = "stable") -> bytes:
    return encode(
        Prediction(
            request_id=rid, model="m", model_version="1", variant=variant,  # type: ignore[arg-type]
            features={}, output=1.0, ts=0.0,
        )
    )  # fmt: skip


def o(rid: str) -> bytes:
    return encode(Outcome(request_id=rid, label=1.0, ts=0.0))


def test_both_sides_inside_the_window_join_once_either_order() -> None:
    ref = ReferenceJoin(window=10, grace=5)
    assert ref.arrive("a", "o", o("a"), now=0) == NEW
    assert ref.arrive("a", "p:stable", p("a"), now=10) == NEW  # the window's last moment
    assert ref.arrive("a", "p:stable", p("a"), now=11) == DUPLICATE
    assert ref.joined() == {"a": 1}


def test_after_the_window_late_then_forgotten() -> None:
    ref = ReferenceJoin(window=10, grace=5)
    ref.arrive("a", "p:stable", p("a"), now=0)
    assert ref.arrive("a", "o", o("a"), now=10.5) == LATE
    assert ref.arrive("a", "o", o("a"), now=12) == DUPLICATE
    assert ref.expired_predictions == 1
    assert ref.arrive("a", "o", o("a"), now=16) == NEW  # a new request, forgotten the old
    assert ref.joined() == {}
    ref.sweep(now=27)
    assert ref.expired_outcomes == 1


def test_shadow_and_baseline_are_scored_but_not_served() -> None:
    ref = ReferenceJoin(window=10, grace=5)
    for field in ("p:shadow", "p:baseline", "o"):
        variant = field[2:] if field != "o" else ""
        ref.arrive("a", field, p("a", variant) if variant else o("a"), now=1)
    assert ref.joined() == {}
    assert set(ref.quality()) == {("1", "shadow"), ("1", "baseline")}
    ref.sweep(now=20)
    assert ref.expired_outcomes == 1
