"""Requests of one event-loop turn share one call to a store.

Each caller adds its items and awaits its own slice of the answer. The first caller
of a turn schedules one task; that task takes every item added before it runs, makes
one call for all of them and hands each caller its slice. So a burst of concurrent
requests costs one round trip, not one per request. A call that fails (one of
`errors`) or outlasts the timeout answers every caller of that turn with None, and
the owner decides what None means (serve without the cache, a default, a 503).

The prediction cache, per-entity aggregates and Feast's online store each use one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Answer = TypeVar("Answer")
Part = TypeVar("Part")


class TurnBatch(Generic[Item, Answer, Part]):
    def __init__(
        self,
        call: Callable[[list[Item]], Awaitable[Answer]],
        cut: Callable[[Answer, int, int], Part],
        *,
        timeout_seconds: float,
        errors: tuple[type[BaseException], ...],
        on_failure: Callable[[BaseException, int], None] | None = None,
        name: str | None = None,
        fallback: str = "serving without it",
    ) -> None:
        """`call` answers a whole turn's items; `cut(answer, start, stop)` is one caller's
        part of it. `on_failure(error, items)` is told of each failed call; with a `name`,
        the first failure (saying what happens instead: `fallback`) and the recovery
        after it are logged."""
        self._call = call
        self._cut = cut
        self.timeout_seconds = timeout_seconds
        self._errors = errors
        self._on_failure = on_failure
        self._name = name
        self._fallback = fallback
        self._queued: list[tuple[Sequence[Item], asyncio.Future[Part | None]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.failing = False

    async def submit(self, items: Sequence[Item]) -> Part | None:
        """This caller's part of the turn's answer; None when the call failed."""
        future: asyncio.Future[Part | None] = asyncio.get_running_loop().create_future()
        self._queued.append((items, future))
        self.kick()
        return await future

    def kick(self) -> None:
        """Make sure a call happens this turn, even with no items (for an owner that
        sends writes with it)."""
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.get_running_loop().create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the calls still running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _flush(self) -> None:
        self._scheduled = False
        queued, self._queued = self._queued, []
        items = [item for batch, _ in queued for item in batch]
        try:
            async with asyncio.timeout(self.timeout_seconds):
                answer = await self._call(items)
        except self._errors as exc:
            if self._name is not None and not self.failing:
                log.warning("%s unavailable (%s); %s", self._name, exc, self._fallback)
            self.failing = True
            if self._on_failure is not None:
                self._on_failure(exc, len(items))
            for _, future in queued:
                if not future.done():
                    future.set_result(None)
            return
        if self._name is not None and self.failing:
            log.info("%s available again", self._name)
        self.failing = False
        start = 0
        for batch, future in queued:
            stop = start + len(batch)
            if not future.done():  # a request cancelled meanwhile was still sent
                future.set_result(self._cut(answer, start, stop))
            start = stop
