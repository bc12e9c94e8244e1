"""A traffic generator that plays the user's application.

It asks the inference API for predictions, one row per request as an application
would, and sends each row's true label a second later with the request id the API
answered with, through the outcomes route of the same API (`driftline.client`):
the feedback the loop learns from, sent as a user's application would send it.

Because it knows the truth of every row, it also measures what the application
experiences: accuracy of the answers it got, by variant and version, per second.
That is the "dynamic model" curve of the demo; the frozen baseline's curve comes
from the live quality the joiner computes for the baseline variant.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from driftline.client import ClientError
from driftline.common.streams import DriftingStream

log = logging.getLogger(__name__)


@dataclass
class Second:
    """What the application saw during one second of the run."""

    sent: int = 0
    errors: int = 0
    shed: int = 0
    correct: int = 0
    answered: int = 0
    by_variant: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    """variant -> [answered, correct]"""


@dataclass
class TrafficLog:
    start: float = field(default_factory=time.time)
    seconds: dict[int, Second] = field(default_factory=lambda: defaultdict(Second))
    versions_seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    outcomes_sent: int = 0
    error_causes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """What made a request fail: an HTTP status or the client's exception, with a count."""

    def at(self, ts: float) -> Second:
        return self.seconds[int(ts - self.start)]

    def accuracy(self, t0: float, t1: float, variant: str | None = None) -> float | None:
        """Accuracy of the answers between run-seconds t0 and t1."""
        answered = correct = 0
        for sec, s in self.seconds.items():
            if t0 <= sec < t1:
                if variant is None:
                    answered += s.answered
                    correct += s.correct
                else:
                    a, c = s.by_variant.get(variant, (0, 0))
                    answered += a
                    correct += c
        return correct / answered if answered else None

    def totals(self) -> dict[str, int]:
        out = {"sent": 0, "answered": 0, "errors": 0, "shed": 0}
        for s in self.seconds.values():
            out["sent"] += s.sent
            out["answered"] += s.answered
            out["errors"] += s.errors
            out["shed"] += s.shed
        return out


class OutcomeSink(Protocol):
    """Where the true labels go: `driftline.client.Client`, or a test's own recorder."""

    def send_outcomes(self, outcomes: Iterable[tuple[str, int | float]]) -> None:
        """Take them without waiting for the network."""

    def close(self) -> None:
        """Send what is left."""


class TrafficGenerator:
    def __init__(
        self,
        *,
        inference_url: str,
        model_name: str,
        stream: DriftingStream,
        outcomes: OutcomeSink,
        rate: float = 150.0,
        outcome_delay: float = 1.0,
        entities: int = 2000,
        concurrency: int = 8,
    ) -> None:
        self.url = f"{inference_url}/v1/models/{model_name}/predict"
        self.stream = stream
        self.outcomes = outcomes
        self.rate = rate
        self.outcome_delay = outcome_delay
        self.entities = entities
        self.concurrency = concurrency
        self.log = TrafficLog()
        self._due: list[tuple[float, str, float]] = []  # (due time, request id, label)
        self._counter = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _next_row(self) -> tuple[dict[str, float | str], float, str]:
        rows = self.stream.take(1)
        self._counter += 1
        entity = f"e{self._counter * 7919 % self.entities}"
        return rows.features()[0], float(rows.labels[0]), entity

    async def _worker(self, client: httpx.AsyncClient, interval: float) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += interval
            features, label, entity = self._next_row()
            now = time.time()
            second = self.log.at(now)
            second.sent += 1
            try:
                resp = await client.post(self.url, json={"entity_id": entity, "features": features})
            except httpx.HTTPError as exc:
                second.errors += 1
                self.log.error_causes[type(exc).__name__] += 1
                log.warning("predict failed: %s: %s", type(exc).__name__, exc)
            else:
                if resp.status_code in (429, 503):
                    second.shed += 1
                elif resp.status_code != 200:
                    second.errors += 1
                    self.log.error_causes[f"HTTP {resp.status_code}"] += 1
                    log.warning("predict answered %d: %s", resp.status_code, resp.text[:300])
                else:
                    self._record(second, resp.json(), label)
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up

    def _record(self, second: Second, answer: dict[str, Any], label: float) -> None:
        predicted = answer.get("label", answer.get("value"))
        variant = str(answer.get("variant", "stable"))
        correct = int(predicted is not None and int(predicted) == int(label))
        second.answered += 1
        second.correct += correct
        counts = second.by_variant[variant]
        counts[0] += 1
        counts[1] += correct
        self.log.versions_seen[str(answer.get("model_version"))] += 1
        heapq.heappush(
            self._due, (time.time() + self.outcome_delay, str(answer["request_id"]), label)
        )

    async def _send_outcomes(self) -> None:
        while not self._stop.is_set() or self._due:
            now = time.time()
            due = []
            while self._due and (self._due[0][0] <= now or self._stop.is_set()):
                _, request_id, label = heapq.heappop(self._due)
                due.append((request_id, label))
            if due:
                self.outcomes.send_outcomes(due)  # buffered: sent in batches, off this loop
                self.log.outcomes_sent += len(due)
            await asyncio.sleep(0.05)
        try:
            await asyncio.to_thread(self.outcomes.close)
        except ClientError as exc:
            log.warning("outcomes left unsent at the end: %s", exc)

    async def run(self) -> TrafficLog:
        interval = self.concurrency / self.rate
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        async with httpx.AsyncClient(timeout=5.0, limits=limits) as client:
            workers = [
                asyncio.create_task(self._worker(client, interval)) for _ in range(self.concurrency)
            ]
            sender = asyncio.create_task(self._send_outcomes())
            await self._stop.wait()
            await asyncio.gather(*workers)
            await sender
        return self.log
