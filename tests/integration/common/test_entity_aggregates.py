"""Per-entity windowed aggregates in real Redis against a plain-Python reference.

Hypothesis draws batches of reads, adds and read-then-adds on a few entities and two
windows, at rising times; every value the Lua script answers must equal what a list of
(bucket, value) events per entity gives, for every function; a key's TTL and its number
of fields stay bounded by the window.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.api.spec import AggregateSource
from driftline.common.entity_aggregates import (
    BUCKETS,
    EMPTY,
    EXCHANGE,
    Step,
    Tally,
    bucket_width,
    parse_reply,
    script_args,
    ttl_ms,
    value_of,
)

pytestmark = pytest.mark.integration

# Windows of a minute or more: the keys' TTLs run on Redis's clock, the test's time is
# drawn, so a window must outlast the test to be judged by the drawn time alone.
WINDOWS = (60, 3600)
ENTITIES = ("a", "b", "c")
FUNCTIONS = ("count", "sum", "mean", "last", "rate")


class Reference:
    """The aggregate as a list of events: bucket b counts while b > now's bucket - BUCKETS."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def step(self, step: Step, now: float) -> Tally | None:
        b = math.floor(now / bucket_width(step.window_seconds))
        alive = [(eb, v) for eb, v in self.events[step.key] if eb > b - BUCKETS]
        tally = None
        if step.op != "add":
            values = [v for _, v in alive]
            tally = Tally(len(values), sum(values), values[-1] if values else None)
        if step.op != "read":
            self.events[step.key].append((b, step.value))
        return tally


def expected_value(tally: Tally, source: AggregateSource) -> float:
    """Each function written out plainly, apart from `value_of`."""
    if source.function in ("count", "rate"):
        return tally.count / (source.window_seconds if source.function == "rate" else 1)
    if source.function == "sum":
        return tally.total
    if source.function == "mean":
        return source.default if tally.count == 0 else tally.total / tally.count
    return source.default if tally.last is None else tally.last


steps = st.tuples(
    st.sampled_from(ENTITIES),
    st.sampled_from(WINDOWS),
    st.sampled_from(["read", "add", "read-add"]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda v: round(v, 3)),
)
batches = st.lists(
    st.tuples(
        # Whole seconds near the 60 s window's edge, and anything up to a few windows.
        st.one_of(st.integers(0, 3), st.integers(55, 65), st.floats(0, 400)).map(float),
        st.lists(steps, min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches)
def test_the_script_agrees_with_the_reference(redis_client: Any, batches: Any) -> None:
    script = redis_client.register_script(EXCHANGE)
    prefix = f"test:{uuid.uuid4().hex}"
    reference = Reference()
    now = 1_700_000_000.0
    for advance, drawn in batches:
        now += advance
        batch = [
            Step(f"{prefix}:{window}:{entity}", op, window, value)
            for entity, window, op, value in drawn
        ]
        keys, args = script_args(batch, now)
        answered = iter(parse_reply(script(keys=keys, args=args)))
        for step in batch:
            expected = reference.step(step, now)
            if expected is None:
                continue
            got = next(answered)
            assert got.count == expected.count
            assert got.total == pytest.approx(expected.total, rel=1e-9, abs=1e-6)
            assert got.last == expected.last
            for function in FUNCTIONS:
                of = None if function in ("count", "rate") else "x"
                source = AggregateSource(
                    function=function, of=of, window_seconds=int(step.window_seconds), default=-1
                )
                assert value_of(got, source) == pytest.approx(expected_value(expected, source))
        assert next(answered, None) is None
        for step in batch:
            if redis_client.exists(step.key):
                assert 0 < redis_client.pttl(step.key) <= ttl_ms(step.window_seconds)
                assert redis_client.hlen(step.key) <= 2 * BUCKETS + 2


def test_a_key_expires_a_window_and_a_bucket_after_its_last_event(redis_client: Any) -> None:
    script = redis_client.register_script(EXCHANGE)
    keys, args = script_args([Step("test:ttl:e", "read-add", 1, 5.0)], 1_700_000_000.0)
    assert parse_reply(script(keys=keys, args=args)) == [EMPTY]
    assert 0 < redis_client.pttl("test:ttl:e") <= ttl_ms(1) == 1017
    time.sleep(1.2)
    assert not redis_client.exists("test:ttl:e")


def test_reads_leave_no_key_behind(redis_client: Any) -> None:
    script = redis_client.register_script(EXCHANGE)
    keys, args = script_args([Step(f"test:read:{i}", "read", 60) for i in range(5)], 1e9)
    assert parse_reply(script(keys=keys, args=args)) == [EMPTY] * 5
    assert redis_client.keys("test:read:*") == []
