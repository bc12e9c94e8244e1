"""Serving stats: request counts, errors and latency per version, variant and route.

Two readers, one set of counters:

- the rollout controller compares a candidate's error rate and p99 latency with
  the stable version's, from `driftline.common.redis_state.ServingStore` in Redis;
- Prometheus scrapes `driftline_inference_request_seconds` and
  `driftline_inference_responses_total`.

A request costs a few integer additions here (no lock, no Redis call, no
prometheus_client object): the counters are cumulative in memory; Prometheus
reads them when it scrapes (this class is a collector), and about once a second
the growth since the last write goes to Redis in one pipeline. When Redis is
away, nothing is lost: the next write carries everything since the last success.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from driftline.common.redis_state import LATENCY_BUCKETS_MS, ServingStore
from driftline.inference import metrics

log = logging.getLogger(__name__)

_BOUNDS = list(LATENCY_BUCKETS_MS)
_LAST = len(_BOUNDS) - 1
_REDIS_FIELDS = ["requests", "errors", *(f"le_{i}" for i in range(len(_BOUNDS)))]
_BUCKET_LABELS = [f"{b / 1000:g}" if b != float("inf") else "+Inf" for b in _BOUNDS]
# counts: [requests, errors, latency sum (ms), one count per latency bucket]
_SIZE = 3 + len(_BOUNDS)


class ServingCounters:
    """Cumulative counters per (version, variant, route); a Prometheus collector."""

    def __init__(
        self, model_name: str, store: ServingStore, client: Any | None, flush_seconds: float
    ) -> None:
        self.model_name = model_name
        self.store = store
        self.client = client
        self.flush_seconds = flush_seconds
        self._counts: dict[tuple[str, str, str], list[float]] = {}
        self._responses: dict[tuple[str, int], int] = {}
        self._written: dict[tuple[str, str], list[float]] = {}
        self._stopping = False
        self._failing = False

    # --- the request path ------------------------------------------------------------------

    def observe(
        self, version: str, variant: str, route: str, seconds: float, error: bool = False
    ) -> None:
        counts = self._counts.get((version, variant, route))
        if counts is None:
            counts = self._counts[(version, variant, route)] = [0.0] * _SIZE
        ms = seconds * 1000
        counts[0] += 1
        if error:
            counts[1] += 1
        counts[2] += ms
        counts[3 + min(bisect.bisect_left(_BOUNDS, ms), _LAST)] += 1

    def response(self, route: str, status: int) -> None:
        key = (route, status)
        self._responses[key] = self._responses.get(key, 0) + 1

    # --- Redis -----------------------------------------------------------------------------

    def unwritten(self) -> dict[tuple[str, str], dict[str, int]]:
        """Per (version, variant), the counts not yet in Redis (Redis fields, non-zero)."""
        totals: dict[tuple[str, str], list[float]] = {}
        for (version, variant, _), counts in self._counts.items():
            row = totals.setdefault((version, variant), [0.0] * len(_REDIS_FIELDS))
            row[0] += counts[0]
            row[1] += counts[1]
            for i, n in enumerate(counts[3:]):
                row[2 + i] += n
        out = {}
        for key, row in totals.items():
            written = self._written.get(key, [0.0] * len(_REDIS_FIELDS))
            delta = {f: int(v - w) for f, v, w in zip(_REDIS_FIELDS, row, written, strict=True)}
            delta = {f: v for f, v in delta.items() if v}
            if delta:
                out[key] = delta
        return out

    async def run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    def stop(self) -> None:
        self._stopping = True

    async def flush(self) -> None:
        if self.client is None:
            return
        pending = self.unwritten()
        if not pending:
            return
        pipe = self.client.pipeline(transaction=False)
        for (version, variant), fields in pending.items():
            self.store.counters(version, variant).add(pipe, fields)
        try:
            await pipe.execute()
        except Exception as exc:  # Redis away: the next write carries these counts too
            metrics.stats_flush_errors_total.inc()
            if not self._failing:
                log.warning("serving stats not written (%s); they will be written later", exc)
            self._failing = True
            return
        for key, fields in pending.items():
            written = self._written.setdefault(key, [0.0] * len(_REDIS_FIELDS))
            for i, name in enumerate(_REDIS_FIELDS):
                written[i] += fields.get(name, 0)
        if self._failing:
            log.info("serving stats written again")
        self._failing = False

    # --- Prometheus ------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # several services may live in one process (tests); names are not claimed

    def collect(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            metrics.REQUEST_SECONDS,
            "Time from request received to response ready, by model, version, variant "
            "and route (side: shadow and baseline scoring).",
            labels=["model", "version", "variant", "route"],
        )
        for (version, variant, route), counts in list(self._counts.items()):
            cumulative, running = [], 0.0
            for label, n in zip(_BUCKET_LABELS, counts[3:], strict=True):
                running += n
                cumulative.append((label, running))
            histogram.add_metric(
                [self.model_name, version, variant, route], cumulative, counts[2] / 1000
            )
        yield histogram
        responses = CounterMetricFamily(
            metrics.RESPONSES_TOTAL,
            "Responses by route and HTTP status code.",
            labels=["route", "code"],
        )
        for (route, status), n in list(self._responses.items()):
            responses.add_metric([route, str(status)], n)
        yield responses
