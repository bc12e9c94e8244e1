"""One call per event-loop turn: every caller of the turn gets its own slice, a failed or
slow call answers them all with None, and the next turn calls again."""

from __future__ import annotations

import asyncio
import logging

import pytest

from driftline.inference.turn_batch import TurnBatch


class Store:
    """Doubles each item; fails while `down`, sleeps `delay` seconds per call."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.down = False
        self.delay = 0.0

    async def call(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise ConnectionError("refused")
        return [2 * item for item in items]


def batch(store: Store, failures: list[int] | None = None) -> TurnBatch[int, list[int], list[int]]:
    return TurnBatch(
        store.call,
        lambda answer, start, stop: answer[start:stop],
        timeout_seconds=0.05,
        errors=(ConnectionError, TimeoutError),
        on_failure=None if failures is None else (lambda _, n: failures.append(n)),
        name="test store",
    )


async def test_callers_of_one_turn_share_one_call_and_get_their_own_slice() -> None:
    store = Store()
    turn = batch(store)
    answers = await asyncio.gather(turn.submit([1, 2]), turn.submit([]), turn.submit([3]))
    assert answers == [[2, 4], [], [6]]
    assert store.calls == [[1, 2, 3]]
    assert await turn.submit([5]) == [10]  # the next turn calls again
    assert store.calls == [[1, 2, 3], [5]]


async def test_a_failed_call_answers_every_caller_with_none_and_counts_its_items(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    failures: list[int] = []
    turn = batch(store, failures)
    store.down = True
    with caplog.at_level(logging.INFO, logger="driftline.inference.turn_batch"):
        assert await asyncio.gather(turn.submit([1]), turn.submit([2, 3])) == [None, None]
        assert await turn.submit([4]) is None
        assert turn.failing
        store.down = False
        assert await turn.submit([4]) == [8]
    assert failures == [3, 1]
    assert not turn.failing
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "test store unavailable (refused); serving without it",  # once, not per call
        "test store available again",
    ]


async def test_a_call_slower_than_the_timeout_fails() -> None:
    store = Store()
    failures: list[int] = []
    turn = batch(store, failures)
    store.delay = 0.5
    assert await turn.submit([1]) is None
    assert failures == [1]


async def test_kick_calls_with_no_items_and_close_waits_for_it() -> None:
    store = Store()
    turn = batch(store)
    turn.kick()
    turn.kick()  # one call per turn, however often kicked
    await turn.close()
    assert store.calls == [[]]
