"""Replay of the spool: its records to the predictions topic, in order, once the broker is back.

A producer of its own sends the spool's head, at most `window` records at a time
(a single probe record until the broker has acknowledged one, so an absent broker
holds one record in memory, not thousands). Each acknowledgement is reported
(unlike the log's main producer, which reports failures only), and the spool is
committed up to the first record not acknowledged yet, so a restart replays from
exactly there. Its records never time out: while the broker is away they wait in
the producer (and stay in the spool), and the idempotent producer's retries
deliver each one once when it is back. A failed delivery (an error other than
absence) drops the producer and rewinds the spool to its commit, to be tried
again after a backoff.

A record older than the join window at replay could never be joined with its
outcome: it is dropped and counted (`expired`), not sent.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_producer
from driftline.inference import metrics
from driftline.inference.spool import Position, Spool

log = logging.getLogger(__name__)

_CURSOR_SECONDS = 0.2
"""The cursor file is rewritten at most this often: a kill -9 replays at most this much twice."""


class SpoolReplay:
    def __init__(
        self,
        spool: Spool,
        kafka: KafkaConnection,
        topic: str,
        *,
        max_age_seconds: float | None,
        window: int = 1000,
        producer_overrides: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.topic = topic
        self.max_age_seconds = max_age_seconds
        self.window = window
        self._kafka = kafka
        self._overrides = dict(producer_overrides or {})
        self._clock = clock
        self._producer: Any = None
        self._inflight: deque[tuple[int, Position]] = deque()
        self._acked: set[int] = set()
        self._seq = itertools.count()
        self._failed = False
        self._confirmed = False
        """The broker acknowledged a record of this producer: send whole windows."""
        self._retry_at = 0.0
        self._backoff = 0.5
        self._saved_at = 0.0
        self._saved = spool.committed
        self.replayed = 0
        self.expired = 0
        self._replayed = metrics.predictions_replayed_total
        self._logged = metrics.predictions_logged_total
        self._expired = metrics.predictions_dropped_total.labels("expired")

    @property
    def done(self) -> bool:
        """Everything spooled was delivered (or dropped and counted)."""
        return not self._inflight and self.spool.pending == 0

    @property
    def caught_up(self) -> bool:
        """The broker takes records, and every spooled one has been sent."""
        return self._confirmed and self.spool.unread == 0

    def step(self) -> bool:
        """Send what the window allows, settle acknowledgements; True when done."""
        if self._producer is not None:
            self._producer.poll(0)
        self._settle()
        now = time.monotonic()
        if self._failed:
            self._give_up(now)
        if now >= self._retry_at:
            self._send()
            if self._producer is not None:
                self._producer.poll(0)
            self._settle()
        if self.spool.committed != self._saved and now - self._saved_at >= _CURSOR_SECONDS:
            self.save()
        return self.done

    def save(self) -> None:
        self.spool.save_cursor()
        self._saved = self.spool.committed
        self._saved_at = time.monotonic()

    def flush(self, timeout: float) -> None:
        """At shutdown: wait up to `timeout` for what is in flight, then keep the cursor."""
        if self._producer is not None and self._inflight:
            self._producer.flush(timeout)
        self._settle()
        self.save()

    def _send(self) -> None:
        room = (self.window if self._confirmed else 1) - len(self._inflight)
        if room <= 0:
            return
        entries = self.spool.read(room)
        if not entries:
            return
        if self._producer is None:
            self._producer = self._new_producer()
        now = self._clock()
        for entry in entries:
            seq = next(self._seq)
            self._inflight.append((seq, entry.after))
            if self.max_age_seconds is not None and now - entry.ts > self.max_age_seconds:
                self._acked.add(seq)  # settled as it is: never sent
                self.expired += 1
                self._expired.inc()
                continue
            self._producer.produce(
                self.topic, entry.value, entry.key, on_delivery=partial(self._on_delivery, seq)
            )

    def _settle(self) -> None:
        """Commit the spool up to the first record not acknowledged yet."""
        last: Position | None = None
        while self._inflight and self._inflight[0][0] in self._acked:
            seq, last = self._inflight.popleft()
            self._acked.discard(seq)
        if last is not None and last.seq >= self.spool.first_seq and last > self.spool.committed:
            self.spool.commit(last)

    def _on_delivery(self, seq: int, err: Any, _msg: Any) -> None:
        if err is not None:
            self._failed = True
            return
        self._acked.add(seq)
        self.replayed += 1
        self._replayed.inc()
        self._logged.inc()
        if not self._confirmed:
            self._confirmed = True
            self._backoff = 0.5
            log.info("the broker takes records again; replaying the spool")

    def _give_up(self, now: float) -> None:
        """The broker is away (again): drop what is in flight, read again from the commit."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.poll(0)
        first = self.spool.first_seq
        lost = sum(
            1 for seq, after in self._inflight if after.seq < first and seq not in self._acked
        )
        if lost:  # read from segments shed meanwhile: nothing to read them again from
            self.spool.shed += lost  # (the log counts the spool's shed records)
        self._inflight.clear()
        self._acked.clear()
        self.spool.rewind()
        self._failed = False
        self._confirmed = False
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, 5.0)

    def _new_producer(self) -> Any:
        return make_producer(
            self._kafka,
            **{
                "queue.buffering.max.messages": max(self.window * 2, 1000),
                # Never time out: a timed-out record would be sent again by a new
                # producer, and a stalled broker may still write the first copy.
                "message.timeout.ms": 0,
                "linger.ms": 20,
                "logger": logging.getLogger("driftline.inference.kafka"),
                **self._overrides,
            },
        )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.purge()
            self._producer.poll(0)
            self._producer = None
