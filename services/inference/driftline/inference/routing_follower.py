"""Following the routing table that the rollout controller writes to Redis.

The table is read at start, and changes arrive two ways: the pub/sub channel
(`RoutingStore.channel`, at once) and a poll of the key every second (in case a
message was missed, or the subscription was down). A table is taken only when its
`revision` is above the one being followed, so a late message never turns the
clock back.

Without a table (a model that has never been rolled out, or a Redis we cannot
read before any table was seen) the pod serves the version under the alias
`champion` (and `baseline`, when the spec asks for it), re-read every few seconds.
Redis going away later changes nothing: the last table stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from driftline.api.artifacts import ALIAS_BASELINE, ALIAS_CHAMPION
from driftline.api.routing import RoutingTable, decode_table
from driftline.common.redis_state import RoutingStore
from driftline.inference.errors import ModelLoadError
from driftline.inference.loader import Registry
from driftline.inference.pool import ModelPool

log = logging.getLogger(__name__)


class RoutingFollower:
    """Keeps `pool` serving the current routing table (or the champion alias)."""

    def __init__(
        self,
        pool: ModelPool,
        registry: Registry,
        store: RoutingStore,
        redis: Any | None,
        *,
        poll_seconds: float = 1.0,
        alias_poll_seconds: float = 5.0,
        with_baseline: bool = True,
        pinned_version: str | None = None,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.store = store
        self.redis = redis
        self.poll_seconds = poll_seconds
        self.alias_poll_seconds = alias_poll_seconds
        self.with_baseline = with_baseline
        self.pinned = pinned_version
        self.wanted: RoutingTable | None = None
        self.from_table = False
        self._alias_due = 0.0
        self._pubsub: Any = None
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        """Until `stop()`: read, subscribe, poll, and apply what changed."""
        try:
            while not self._stopped.is_set():
                try:
                    await self._step()
                except Exception:  # a bug here must not freeze the routing for good
                    log.exception("routing step failed; trying again")
                    await self._sleep(self.poll_seconds)
        finally:
            await self._close_pubsub()

    async def _step(self) -> None:
        table, readable = await self._next_table()
        await self._consider(table, readable)
        wanted = self.wanted
        if wanted is not None and (
            self.pool.state is None or self.pool.state.table != wanted or self.pool.pending(wanted)
        ):
            await self.pool.apply(wanted)
        await self.pool.tidy()

    def stop(self) -> None:
        self._stopped.set()

    # --- reading ---------------------------------------------------------------------------

    async def _next_table(self) -> tuple[RoutingTable | None, bool]:
        """The table in Redis after a message or a poll interval; (None, False) if unreadable."""
        if self.pinned is not None or self.redis is None:
            await self._sleep(self.poll_seconds)
            return None, False
        try:
            message = None
            if self._pubsub is None:
                self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(self.store.channel)
            else:
                message = await self._pubsub.get_message(timeout=self.poll_seconds)
            data = message["data"] if message else await self.redis.get(self.store.key)
        except Exception as exc:  # redis-py's connection and timeout errors, all alike here
            log.warning("routing table unreadable (%s); keeping the current routing", exc)
            await self._close_pubsub()
            await self._sleep(self.poll_seconds)
            return None, False
        if not data:
            return None, True
        try:
            return decode_table(data), True
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            log.error("ignoring an invalid routing table in %s: %s", self.store.key, exc)
            return None, False

    async def _consider(self, table: RoutingTable | None, readable: bool) -> None:
        if self.pinned is not None:
            self.wanted = RoutingTable(stable=self.pinned)
            return
        if table is not None:
            current = self.wanted.revision if self.wanted is not None and self.from_table else None
            if current is None or table.revision > current:
                if self.wanted != table:
                    log.info("routing table revision %d: %s", table.revision, table)
                self.wanted = table
                self.from_table = True
            return
        if self.from_table and not readable:
            return  # Redis is unreachable: the last table stays in force
        if self.from_table:
            log.warning("the routing table was removed; serving the %s alias", ALIAS_CHAMPION)
            self.from_table = False
        now = time.monotonic()
        if now < self._alias_due:
            return
        self._alias_due = now + self.alias_poll_seconds
        try:
            wanted = await asyncio.to_thread(self._aliases)
        except ModelLoadError as exc:
            log.warning("cannot read the %s alias: %s", ALIAS_CHAMPION, exc)
            return
        if wanted is not None and wanted != self.wanted:
            log.info("no routing table; %s alias is version %s", ALIAS_CHAMPION, wanted.stable)
            self.wanted = wanted

    def _aliases(self) -> RoutingTable | None:
        champion = self.registry.version_for_alias(ALIAS_CHAMPION)
        if champion is None:
            return None
        baseline = self.registry.version_for_alias(ALIAS_BASELINE) if self.with_baseline else None
        return RoutingTable(stable=champion, baseline=baseline)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
