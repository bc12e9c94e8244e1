"""The joiner process's loop: Kafka in, Redis state, labeled examples out.

One consumer in group `driftline-<model>-joiner` reads the predictions and outcomes
topics in batches. For each batch, in this order:

1. decode; bad records go to the dead-letter topic with the reason;
2. `JoinEngine.process`: two atomic Redis scripts (state, markers, counters, outbox);
3. send the new labeled examples (idempotent producer, keyed by request id) and the
   dead letters, and wait until the broker has them;
4. clear the batch's outboxes, then commit the batch's offsets.

So committed offsets are never ahead of durable effects. A crash between 2 and 4
leaves examples named in an outbox; whoever is assigned that partition next reads
the labeled topic from where the outbox says, and resends only the ones it does not
find there (`recovery.py`). Redis or broker failures pause the loop and retry the
batch: the service degrades, it does not crash or skip records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from driftline.api.events import EventError, Outcome, Prediction, decode
from driftline.common.health import Heartbeat
from driftline.common.kafka import DeadLetters, ensure_topics, make_consumer, make_producer
from driftline.joiner import metrics
from driftline.joiner.engine import BatchResult, JoinEngine
from driftline.joiner.recovery import DeliveryError, LabeledLog
from driftline.joiner.settings import JoinerSettings
from driftline.joiner.store import ARRIVAL_DUPLICATE, ARRIVAL_LATE, Arrival, JoinStore

log = logging.getLogger(__name__)

_RESULTS = {0: "new", ARRIVAL_DUPLICATE: "duplicate", ARRIVAL_LATE: "late"}


def group_id(model_name: str) -> str:
    return f"driftline-{model_name}-joiner"


class JoinerWorker:
    """Owns the clients of one joiner process; `run` until `stop` is set."""

    def __init__(
        self,
        settings: JoinerSettings,
        heartbeat: Heartbeat | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        model = settings.model
        self.settings = settings
        self.heartbeat = heartbeat or Heartbeat()
        self.clock = clock
        self.model_name = model.name
        self.topics = model.topics
        self.window = model.spec.feedback.join_window_seconds
        connections = settings.connections
        kafka = self.kafka = connections.kafka
        self.partitions = model.spec.kafka.partitions
        self.redis = connections.redis.client(socket_timeout=30, socket_connect_timeout=5)
        store = JoinStore(
            self.redis,
            model.metadata.namespace,
            model.name,
            window=self.window,
            grace=settings.grace(self.window),
        )
        self.engine = JoinEngine(store, model.spec.model.task, settings.agreement_tolerance)
        self.labeled = LabeledLog(kafka, self.topics.labeled, make_producer(kafka))
        self.dead_letters = DeadLetters(self.labeled.producer, self.topics.dead_letter)
        self.consumer = make_consumer(kafka, group_id(model.name))
        self._to_recover: set[str] = set()
        self._done: dict[tuple[str, int], int] = {}
        self._next_sweep = 0.0
        self._failing = False

    # --- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        if not self._retrying(stop, self._prepare):
            self.close()
            return
        log.info(
            "joining %s + %s -> %s, window %.0fs, group %s",
            self.topics.predictions, self.topics.outcomes, self.topics.labeled,
            self.window, group_id(self.model_name),
        )  # fmt: skip
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                records = self.consumer.consume(
                    self.settings.batch_size, self.settings.poll_timeout_seconds
                )
                # Partitions assigned during `consume` first settle what a previous
                # owner left in their outboxes, before any of their records is joined.
                if self._to_recover and not self._retrying(stop, self._recover_owed):
                    break
                if records and not self._handle(records, stop):
                    break
                if self.clock() >= self._next_sweep:
                    self._sweep()
        finally:
            self.close()

    def _prepare(self) -> None:
        """Create missing topics and learn where the labeled topic ends."""
        topics = [self.topics.predictions, self.topics.outcomes, self.topics.labeled]
        if self.topics.dead_letter:
            topics.append(self.topics.dead_letter)
        ensure_topics(self.kafka, topics, partitions=self.partitions)
        self.labeled.start(self.consumer)
        # Subscribe once the topics exist: librdkafka looks for missing ones again
        # only every few minutes.
        self.consumer.subscribe(
            [self.topics.predictions, self.topics.outcomes],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def close(self) -> None:
        """Commit what was done and leave the group (SIGTERM ends here)."""
        try:
            self._commit(asynchronous=False)
            self.consumer.close()
        except Exception as exc:  # the process is ending: say so, do not mask the cause
            log.warning("closing the consumer failed: %s", exc)
        self.labeled.producer.flush(10)

    def _handle(self, records: list[Any], stop: threading.Event) -> bool:
        """Join one batch and commit it; False when `stop` interrupted a retry (the
        batch is then left uncommitted and replayed by the next owner)."""
        started = time.perf_counter()
        arrivals, origins, dead = self._decode(records)
        result: BatchResult | None = None
        if arrivals:
            results: list[BatchResult] = []
            if not self._retrying(stop, lambda: results.append(self._join(arrivals))):
                return False
            result = results[0]
            counts: Counter[tuple[str, int]] = Counter()
            for (msg, side), status in zip(origins, result.statuses, strict=True):
                counts[(side, status)] += 1
                if status == ARRIVAL_LATE:
                    dead.append((msg, f"late: {side} arrived after the {self.window:g}s window"))
            for (side, status), n in counts.items():
                metrics.messages.labels(side, _RESULTS[status]).inc(n)
        if (result or dead) and not self._retrying(stop, lambda: self._deliver(result, dead)):
            return False
        if result is not None:
            self._count(result)
        for msg in records:
            if msg.error() is None:
                key = (msg.topic(), msg.partition())
                self._done[key] = max(self._done.get(key, -1), msg.offset())
        self._commit(asynchronous=True)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        return True

    def _decode(
        self, records: list[Any]
    ) -> tuple[list[Arrival], list[tuple[Any, str]], list[tuple[Any, str]]]:
        """Valid records as arrivals (beside them: the record and its side, for
        metrics and dead letters), and the invalid ones with the reason."""
        arrivals: list[Arrival] = []
        origins: list[tuple[Any, str]] = []
        dead: list[tuple[Any, str]] = []
        invalid: Counter[str] = Counter()
        predictions = self.topics.predictions
        for msg in records:
            if msg.error() is not None:
                log.warning("consumer: %s", msg.error())
                continue
            topic, value = msg.topic(), msg.value()
            side = "prediction" if topic == predictions else "outcome"
            try:
                if value is None:
                    raise EventError("empty record")
                if side == "prediction":
                    p = decode(value, Prediction)
                    if p.model != self.model_name:
                        raise EventError(f"wrong model: {p.model!r}, expected {self.model_name!r}")
                    request_id, field = p.request_id, f"p:{p.variant}"
                else:
                    request_id, field = decode(value, Outcome).request_id, "o"
                if not request_id:
                    raise EventError("request_id is empty")
            except EventError as exc:
                invalid[side] += 1
                dead.append((msg, exc.reason))
                continue
            arrivals.append(
                Arrival(request_id, field, value.decode(), f"{topic}:{msg.partition()}")
            )
            origins.append((msg, side))
        for side, n in invalid.items():
            metrics.messages.labels(side, "invalid").inc(n)
        return arrivals, origins, dead

    def _join(self, arrivals: list[Arrival]) -> BatchResult:
        # After a failed attempt the lost reply may have claimed work: the outboxes
        # of this batch's sources name it, so settle those first.
        if self._to_recover:
            self._recover_owed()
        try:
            return self.engine.process(arrivals, self.clock(), self.labeled.end_offsets())
        except RedisError:
            self._to_recover.update(a.source for a in arrivals)
            raise

    def _deliver(self, result: BatchResult | None, dead: list[tuple[Any, str]]) -> None:
        for msg, reason in dead:  # again on a retry: dead letters are at least once
            self.dead_letters.send(msg, reason)
        if self._to_recover:
            # A failed attempt before this one: its outboxes name the examples, and
            # recovery sends only those the labeled topic does not hold.
            self._recover_owed()
            return
        try:
            self.labeled.send(result.examples if result else [])
        except DeliveryError:
            # Some examples may be in the topic, some not: the outbox knows which
            # are owed, and recovery looks in the topic before it resends any.
            if result:
                self._to_recover.update(result.outboxes)
            raise
        if result:
            self.engine.store.clear_outboxes(result.outboxes)

    # --- recovery, rebalances, offsets ---------------------------------------------

    def _recover_owed(self) -> None:
        sources = sorted(self._to_recover)
        recovered = self.labeled.recover(self.engine, sources, self.clock())
        metrics.recovered.labels("resent").inc(recovered.resent)
        metrics.recovered.labels("present").inc(recovered.present)
        self._count(recovered.result)
        if recovered.resent or recovered.present:
            log.info("outboxes of %s: %d examples resent, %d already sent", sources,
                     recovered.resent, recovered.present)  # fmt: skip
        self._to_recover.difference_update(sources)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._to_recover.update(f"{tp.topic}:{tp.partition}" for tp in partitions)
        log.info("assigned %s", [f"{tp.topic}:{tp.partition}" for tp in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # Callbacks run inside `consume`, between batches: everything read was done.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(asynchronous=False, only=revoked)
        for key in revoked:
            self._done.pop(key, None)
        log.info("revoked %s", sorted(f"{t}:{p}" for t, p in revoked))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # Another member may own them already: committing now could move its offsets.
        for tp in partitions:
            self._done.pop((tp.topic, tp.partition), None)
        log.warning("lost %s", [f"{tp.topic}:{tp.partition}" for tp in partitions])

    def _commit(self, asynchronous: bool, only: set[tuple[str, int]] | None = None) -> None:
        from confluent_kafka import TopicPartition

        offsets = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in self._done.items()
            if only is None or (topic, partition) in only
        ]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)

    # --- housekeeping --------------------------------------------------------------

    def _sweep(self) -> None:
        self._next_sweep = self.clock() + self.settings.sweep_interval_seconds
        try:
            for _ in range(10):  # bounded: the loop must get back to its consumer
                swept = self.engine.sweep(self.clock())
                metrics.expired.labels("prediction").inc(swept.expired_predictions)
                metrics.expired.labels("outcome").inc(swept.expired_outcomes)
                metrics.pending.set(swept.pending)
                if swept.looked_at < 1000:
                    break
        except RedisError as exc:
            log.warning("sweep failed, trying again later: %s", exc)

    def _count(self, result: BatchResult) -> None:
        metrics.labeled.inc(len(result.examples))
        metrics.expired.labels("prediction").inc(result.expired_predictions)
        metrics.expired.labels("outcome").inc(result.expired_outcomes)
        for (version, variant), sums in result.quality.items():
            for name, value in sums.items():
                metrics.quality.labels(version, variant, name).inc(value)
        for (stable, candidate), (compared, agreed) in result.agreement.items():
            metrics.agreement.labels(stable, candidate, "compared").inc(compared)
            metrics.agreement.labels(stable, candidate, "agreed").inc(agreed)

    def _retrying(self, stop: threading.Event, step: Callable[[], None]) -> bool:
        """Run `step` until it succeeds (True), or until `stop` is set (False)."""
        from confluent_kafka import KafkaException

        while True:
            try:
                step()
            except (RedisError, KafkaException, DeliveryError) as exc:
                cause = "redis" if isinstance(exc, RedisError) else "kafka"
                metrics.retries.labels(cause).inc()
                if not self._failing:
                    log.warning("%s failed, retrying until it works: %s", cause, exc)
                self._failing = True
                self.heartbeat.ready = False
            else:
                if self._failing:
                    log.info("working again")
                self._failing = False
                self.heartbeat.ready = True
                return True
            if stop.wait(self.settings.retry_backoff_seconds):
                return False
            self.heartbeat.beat()
