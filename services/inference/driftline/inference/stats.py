"""Serving stats for the rollout analysis: requests, errors and latency per version and variant.

The rollout controller compares a candidate's error rate and p99 latency with the
stable version's, reading `driftline.common.state.ServingStore`. Writing to Redis
per request would cost a round trip each; instead the counts are summed in memory
(a few integer additions per request) and written about once a second, all in one
pipeline. When Redis is away the counts are kept and added to the next write.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from typing import Any

from driftline.common.state import LATENCY_BUCKETS_MS, ServingStore
from driftline.inference import metrics

log = logging.getLogger(__name__)

_BOUNDS = list(LATENCY_BUCKETS_MS)
_LAST = len(_BOUNDS) - 1
_FIELDS = ["requests", "errors", *(f"le_{i}" for i in range(len(_BOUNDS)))]


class ServingStats:
    """In-memory counters per (version, variant), flushed to Redis by `run()`."""

    def __init__(self, store: ServingStore, client: Any | None, flush_seconds: float) -> None:
        self.store = store
        self.client = client
        self.flush_seconds = flush_seconds
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._stopped = asyncio.Event()
        self._failing = False

    def observe(self, version: str, variant: str, latency_ms: float, error: bool = False) -> None:
        counts = self._counts.get((version, variant))
        if counts is None:
            counts = self._counts[(version, variant)] = [0] * len(_FIELDS)
        counts[0] += 1
        if error:
            counts[1] += 1
        counts[2 + min(bisect.bisect_left(_BOUNDS, latency_ms), _LAST)] += 1

    def pending(self) -> dict[tuple[str, str], dict[str, int]]:
        """The counts not yet written (tests, shutdown)."""
        return {
            key: {f: v for f, v in zip(_FIELDS, counts, strict=True) if v}
            for key, counts in self._counts.items()
        }

    async def run(self) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.flush_seconds)
            await self.flush()

    def stop(self) -> None:
        self._stopped.set()

    async def flush(self) -> None:
        if not self._counts or self.client is None:
            return
        counts, self._counts = self._counts, {}
        pipe = self.client.pipeline(transaction=False)
        for (version, variant), values in counts.items():
            fields = {f: v for f, v in zip(_FIELDS, values, strict=True) if v}
            self.store.counters(version, variant).add(pipe, fields)
        try:
            await pipe.execute()
        except Exception as exc:  # Redis away: keep the counts for the next flush
            metrics.stats_flush_errors_total.inc()
            if not self._failing:
                log.warning("serving stats not written (%s); keeping them for later", exc)
            self._failing = True
            for key, values in counts.items():
                mine = self._counts.setdefault(key, [0] * len(_FIELDS))
                for i, v in enumerate(values):
                    mine[i] += v
            return
        if self._failing:
            log.info("serving stats written again")
        self._failing = False
