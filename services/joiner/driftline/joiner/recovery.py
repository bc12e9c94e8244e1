"""The labeled topic as the joiner writes it, and how owed examples are recovered.

Redis and Kafka do not commit together, and the embedded broker does not isolate
transactions, so "exactly once in effect" is built from two facts:

- Phase 1 of a batch claims each example and names it in its source's outbox in
  one atomic step, together with `from`: per labeled partition, an offset at or
  before where the example can land (the end offsets this process has seen, a
  lower bound whatever other replicas write).
- A batch's outbox entries are trimmed only once the broker acknowledged its
  examples (and its offsets are committed).

An outbox left behind (a crash, a failed send) is settled before its source is
joined again: add the counters its batches had not added (a flag per batch says
so), wait until nothing of ours is in flight, read the labeled topic from `from`
to its end, and resend only the request ids not found there. The read is bounded
by what was written since the outbox was filled, usually a batch or two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.api.events import LabeledExample, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_producer, read_topic
from driftline.joiner.engine import BatchResult, JoinEngine
from driftline.joiner.store import Outbox

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every record in time; nothing was committed."""


class LabeledLog:
    """Sends labeled examples, and knows a lower bound of the topic's end offsets:
    its high watermarks when the process started, then the offsets its own examples
    were written at (other replicas only move the true end further)."""

    def __init__(self, kafka: KafkaConnection, topic: str, timeout: float = 30.0) -> None:
        self.kafka = kafka
        self.topic = topic
        self.timeout = timeout
        self._end: dict[int, int] = {}
        self._errors: list[str] = []
        self.producer = make_producer(kafka, on_delivery=self._failed)

    def start(self, consumer: Any) -> None:
        """Read the topic's high watermarks once; deliveries keep them up to date.

        (ListOffsets may answer short of the true end on the embedded broker, see
        `driftline.common.kafka`: still a lower bound, which is all `from` needs.)"""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            meta = consumer.list_topics(self.topic, timeout=self.timeout)
            for p in meta.topics[self.topic].partitions:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=self.timeout
                )
                self._end[p] = max(self._end.get(p, 0), high)
        except (KafkaException, KeyError) as exc:
            # Recovery then reads those partitions from their start: slower, still right.
            log.warning("end offsets of %s unknown: %s", self.topic, exc)

    def end_offsets(self) -> dict[int, int]:
        return dict(self._end)

    def _failed(self, err: Any, msg: Any) -> None:
        """Delivery report of anything else this producer sends (dead letters)."""
        if err is not None:
            self._errors.append(str(err))

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))
            return
        partition, end = msg.partition(), msg.offset() + 1
        if end > self._end.get(partition, 0):
            self._end[partition] = end

    def send(self, examples: Sequence[LabeledExample]) -> None:
        """Produce and wait for the broker's acknowledgement of every example (and
        of everything else this producer has in flight, dead letters included)."""
        self._errors.clear()
        produce, topic, delivered = self.producer.produce, self.topic, self._delivered
        for example in examples:
            key, value = example.request_id.encode(), encode(example)
            while True:
                try:
                    produce(topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let it drain
                    self.producer.poll(0.05)
        self.flush()

    def flush(self) -> None:
        """Wait for every record in flight; fail if any was not acknowledged."""
        remaining = self.producer.flush(self.timeout)
        if remaining or self._errors:
            raise DeliveryError(
                f"{remaining} records unacknowledged after {self.timeout:g}s, "
                f"{len(self._errors)} failed" + (f": {self._errors[0]}" if self._errors else "")
            )

    def scan(self, start_offsets: dict[int, int]) -> set[str]:
        """Request ids (record keys) in the topic from `start_offsets` (or each
        partition's start, where absent) to its current end."""
        try:
            records = read_topic(self.kafka, self.topic, start_offsets, self.timeout)
        except TimeoutError as exc:
            raise DeliveryError(str(exc)) from exc
        return {
            key.decode("utf-8", "replace") for m in records if isinstance(key := m.key(), bytes)
        }

    def recover(self, engine: JoinEngine, sources: Sequence[str], now: float) -> Recovered:
        """Settle the outboxes of `sources` (see `settle_outboxes`)."""
        # Nothing of ours may still be on its way, or the read below could miss it.
        # (Records that failed before are simply not found, and sent again.)
        remaining = self.producer.flush(self.timeout)
        if remaining:
            raise DeliveryError(f"{remaining} records still in flight; recovery waits")
        return settle_outboxes(engine, sources, self.scan, self.send, now)


@dataclass
class Recovered:
    resent: int
    """Examples the labeled topic did not hold, sent now."""
    present: int
    """Examples owed that the labeled topic held already."""
    result: BatchResult
    """The counters added now (for the process's metrics)."""


def settle_outboxes(
    engine: JoinEngine,
    sources: Sequence[str],
    scan: Callable[[dict[int, int]], set[str]],
    send: Callable[[list[LabeledExample]], None],
    now: float,
) -> Recovered:
    """Settle what the outboxes of `sources` hold: add the counters of lost batches
    (once), send the examples `scan` does not find in the labeled topic, then
    clear the outboxes."""
    outboxes = [o for o in (engine.store.read_outbox(s) for s in sources) if o is not None]
    if not outboxes:
        return Recovered(0, 0, BatchResult([]))
    present = scan(_earliest(outboxes))
    total = BatchResult([])
    owed: set[str] = set()
    examples: dict[str, LabeledExample] = {}
    for outbox in outboxes:
        owed.update(rid for _, rid, names in outbox.claims if "e" in names)
        result = engine.recover(outbox, present, now)
        examples.update((e.request_id, e) for e in result.examples)
        total.merge(result)
    lost = owed - present - set(examples)
    if lost:
        log.error("%d owed examples could not be rebuilt (state expired): %s", len(lost),
                  sorted(lost)[:10])  # fmt: skip
    send(list(examples.values()))
    engine.store.clear_outboxes([o.source for o in outboxes])
    return Recovered(len(examples), len(owed & present), total)


def _earliest(outboxes: Sequence[Outbox]) -> dict[int, int]:
    """Per partition, the earliest start of all outboxes; a partition one of them
    does not know is read from its beginning."""
    common = set.intersection(*(set(o.start_offsets) for o in outboxes))
    return {p: min(o.start_offsets[p] for o in outboxes) for p in common}
