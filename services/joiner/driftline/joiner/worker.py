"""The joiner process's loop: Kafka in, Redis state, labeled examples out.

One consumer in group `driftline-<model>-joiner` reads the predictions and outcomes
topics in batches. Each batch goes through:

1. intake: decode; bad records go to the dead-letter topic with the reason;
2. `JoinEngine.process`: two atomic Redis scripts (state, claims and outbox, then
   the batch's counters), on a thread of its own;
3. send the batch's labeled examples (idempotent producer, keyed by request id) and
   dead letters, and wait until the broker has them;
4. trim the batch's outbox entries, then note the batch's offsets as done; they are
   committed at most every `commit_interval_seconds` (and on a rebalance, when idle,
   at exit), again when a commit failed.

Two batches are in hand at a time: while the broker acknowledges batch N's
examples (3), Redis already works on batch N+1 (2), so the joiner's and Redis's
cores work side by side. Offsets are committed in order, each only after its
batch's effects are durable.

A crash between 2 and 4 leaves claims named in an outbox; whoever is assigned that
partition next settles them (`recovery.py`) before reading it. Redis or broker
failures stop the pipeline: everything in hand is then finished one batch at a
time, through the outboxes, retrying until it works; the service degrades, it does
not crash or skip records.

A consumer that stands still behind a partition's end for `stall_seconds` (the
client stuck after a rebalance) is closed and started afresh (`stall.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from driftline.api.parts import JOINER
from driftline.common.health import Heartbeat
from driftline.common.kafka import DeadLetters, ensure_topics, make_consumer
from driftline.common.redis_state import is_calibration_field, model_prefix
from driftline.joiner import metrics
from driftline.joiner.calibration import CalibrationGauges
from driftline.joiner.engine import BatchResult, JoinEngine
from driftline.joiner.fairness import FairnessGauges
from driftline.joiner.intake import Batch, Intake
from driftline.joiner.outcome_aggregates import OutcomeAggregates
from driftline.joiner.recovery import DeliveryError, LabeledLog
from driftline.joiner.segments import segments_of
from driftline.joiner.settings import JoinerSettings
from driftline.joiner.stall import StallWatch
from driftline.joiner.store import ARRIVAL_DUPLICATE, ARRIVAL_LATE, JoinStore, command_packer

log = logging.getLogger(__name__)

_RESULTS = {0: "new", ARRIVAL_DUPLICATE: "duplicate", ARRIVAL_LATE: "late"}


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
        self.redis = connections.redis.client(
            socket_timeout=30, socket_connect_timeout=5, command_packer=command_packer()
        )
        store = JoinStore(
            self.redis,
            model.metadata.namespace,
            model.name,
            window=self.window,
            grace=settings.grace(self.window),
        )
        spec = model.spec
        self.outcome_aggregates = OutcomeAggregates.for_model(
            spec, model_prefix(model.metadata.namespace, model.name), self.redis
        )
        segments = segments_of(spec.monitoring.segments)
        for segment in segments:  # counted from 0: "nothing folded" is a series too
            if segment.admits:
                metrics.segment_folded.labels(segment.name)
        self.engine = JoinEngine(
            store,
            spec.model.task,
            settings.agreement_tolerance,
            segments=segments,
            binary=spec.model.task == "classification" and spec.model.classes == 2,
        )
        # Fairness compares positives: binary classification only.
        self.fairness = (
            FairnessGauges(store.quality, segments, spec.monitoring.fairness)
            if self.engine.scoring.binary
            else None
        )
        self.calibration = (
            CalibrationGauges(store.quality, spec.monitoring.calibration)
            if spec.model.task == "classification"
            else None
        )
        self._next_fairness = self._next_calibration = 0.0
        self.intake = Intake(self.topics, model.name)
        self.labeled = LabeledLog(kafka, self.topics.labeled)
        self.dead_letters = DeadLetters(self.labeled.producer, self.topics.dead_letter)
        self.consumer = self._new_consumer()
        self.stall = StallWatch(settings.stall_seconds)
        self._offsets_reader: Any = None  # made on the first stall check
        self._next_stall_check = 0.0
        self._last_commit = 0.0
        self._dirty = False  # offsets done but not (successfully) committed yet
        self._redis_thread = ThreadPoolExecutor(1, thread_name_prefix="joiner-redis")
        self._open: list[Batch] = []
        self._trims: list[Future[None]] = []
        self._to_recover: set[str] = set()
        self._done: dict[tuple[str, int], int] = {}
        self._next_sweep = 0.0
        self._failing = False
        self._stop = threading.Event()

    # --- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        if not self._retrying(self._prepare):
            self.close()
            return
        log.info(
            "joining %s + %s -> %s, window %.0fs, group %s",
            self.topics.predictions, self.topics.outcomes, self.topics.labeled,
            self.window, JOINER.group_id(self.model_name),
        )  # fmt: skip
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                records = self.consumer.consume(
                    self.settings.batch_size, self.settings.poll_timeout_seconds
                )
                # Partitions assigned during `consume` first settle what a previous
                # owner left in their outboxes, before any of their records is joined.
                if self._to_recover and not (
                    self._finish_open() and self._retrying(self._recover_owed)
                ):
                    break
                if records:
                    if not self._advance(self.intake.batch(records, time.perf_counter())):
                        break
                elif self._open and not self._finish_open():
                    break
                elif self._dirty:
                    self._commit(asynchronous=True)
                if not self._check_progress():
                    break
                if self.clock() >= self._next_sweep:
                    self._next_sweep = self.clock() + self.settings.sweep_interval_seconds
                    self._redis_thread.submit(self._sweep)
            else:
                self._finish_open()  # SIGTERM: finish what is in hand
        finally:
            self.close()

    def _prepare(self) -> None:
        """Create missing topics and learn where the labeled topic ends."""
        topics = [self.topics.predictions, self.topics.outcomes, self.topics.labeled]
        if self.topics.dead_letter:
            topics.append(self.topics.dead_letter)
        ensure_topics(self.kafka, topics, partitions=self.partitions)
        self.labeled.start(self.consumer)
        self._subscribe()

    def _new_consumer(self) -> Any:
        return make_consumer(
            self.kafka, JOINER.group_id(self.model_name), on_commit=self._on_commit
        )

    def _subscribe(self) -> None:
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
        self._redis_thread.shutdown(wait=True)
        try:
            self._commit(asynchronous=False)
            self.consumer.close()
        except Exception as exc:  # the process is ending: say so, do not mask the cause
            log.warning("closing the consumer failed: %s", exc)
        if self._offsets_reader is not None:
            self._offsets_reader.close()  # never subscribed: leaves no group
        self.labeled.producer.flush(10)

    # --- the pipeline: two batches in hand -------------------------------------------

    def _advance(self, batch: Batch) -> bool:
        """Start `batch` in Redis, then finish the batch before it; False when `stop`
        interrupted a retry (what is open is then left uncommitted, to be replayed)."""
        previous = self._open[-1] if self._open else None
        if previous is not None and not self._resolve(previous):
            return self._redo() and self._advance(batch)
        if batch.arrivals:
            batch.future = self._redis_thread.submit(
                self.engine.process, batch.arrivals, self.clock(), self.labeled.end_offsets()
            )
        self._open.append(batch)
        if previous is not None and not self._complete(previous):
            return self._redo()
        if not batch.arrivals and not self._complete(batch):  # dead letters only
            return self._redo()
        return True

    def _finish_open(self) -> bool:
        """Finish every batch in hand, in order, and the Redis work queued behind."""
        while self._open:
            batch = self._open[0]
            if not (self._resolve(batch) and self._complete(batch)):
                return self._redo()
        self._wait_trims()
        return True

    def _wait_trims(self) -> None:
        """Recovery rewrites outboxes: no trim may still be on its way then."""
        for trim in self._trims:
            try:
                trim.result()
            except RedisError as exc:
                log.warning("outbox trim failed (recovery checks those entries): %s", exc)
        self._trims.clear()

    def _resolve(self, batch: Batch) -> bool:
        """Wait for the batch's Redis work; False when it failed."""
        if batch.future is not None and batch.result is None:
            try:
                batch.result = batch.future.result()
            except RedisError as exc:
                self._note_failure("redis", exc)
                return False
            self._tally(batch)
        return True

    def _complete(self, batch: Batch) -> bool:
        """Send the batch's examples and dead letters, commit its offsets, then trim
        its outbox entries; False when the broker failed."""
        from confluent_kafka import KafkaException

        try:
            for msg, reason in batch.dead:
                self.dead_letters.send(msg, reason)
            examples = batch.result.examples if batch.result else []
            self.labeled.send(examples)
        except (DeliveryError, KafkaException) as exc:
            self._note_failure("kafka", exc)
            return False
        metrics.labeled.inc(len(examples))
        self._close(batch)
        if self.outcome_aggregates is not None and examples:
            # After the commit: a replayed batch adds nothing twice (at most once).
            self._redis_thread.submit(self.outcome_aggregates.add, examples, self.clock())
        if batch.result is not None and batch.result.outboxes:
            # Bookkeeping only (an entry left behind is checked against the topic
            # before anything is resent): after the commit, behind the next batch.
            self._trims = [t for t in self._trims if not t.done()]
            self._trims.append(
                self._redis_thread.submit(self.engine.store.trim_outboxes, batch.result.outboxes)
            )
        return True

    def _redo(self) -> bool:
        """After a failure: finish every batch in hand one at a time, through the
        outboxes (which look in the labeled topic before they resend anything)."""
        self._wait_trims()
        for batch in self._open:
            if batch.future is not None and batch.result is None:
                try:
                    batch.result = batch.future.result()
                    self._tally(batch)
                except RedisError:
                    pass  # joined again below
        while self._open:
            batch = self._open[0]
            self._to_recover.update(batch.sources)
            joined = batch.result is not None or not batch.arrivals
            if not joined and not self._retrying(partial(self._join_again, batch)):
                return False
            # Dead letters are sent at least once: again here if the failure hid them.
            if not self._retrying(partial(self._settle_owed, batch)):
                return False
            self._close(batch)
        return True

    def _join_again(self, batch: Batch) -> None:
        self._recover_owed()
        batch.result = self.engine.process(batch.arrivals, self.clock(), self.labeled.end_offsets())
        self._tally(batch)
        self._to_recover.update(batch.result.outboxes)

    def _settle_owed(self, batch: Batch) -> None:
        for msg, reason in batch.dead:
            self.dead_letters.send(msg, reason)
        self._recover_owed()

    def _tally(self, batch: Batch) -> None:
        """Count the batch's arrivals by what became of them; late ones are dead
        letters too. Once per batch, from its first result."""
        if batch.counted or batch.result is None:
            return
        batch.counted = True
        result = batch.result
        for (side, status), n in result.counts.items():
            metrics.messages.labels(side, _RESULTS[status]).inc(n)
        if result.counts.get(("prediction", ARRIVAL_LATE)) or result.counts.get(
            ("outcome", ARRIVAL_LATE)
        ):
            for (msg, side), status in zip(batch.origins, result.statuses, strict=True):
                if status == ARRIVAL_LATE:
                    reason = f"late: {side} arrived after the {self.window:g}s window"
                    batch.dead.append((msg, reason))
        self._count(result)

    def _close(self, batch: Batch) -> None:
        self._open.remove(batch)
        for key, offset in batch.reached.items():
            self._done[key] = max(self._done.get(key, -1), offset)
        self._dirty = True
        if time.monotonic() - self._last_commit >= self.settings.commit_interval_seconds:
            self._commit(asynchronous=True)
        metrics.batch_seconds.observe(time.perf_counter() - batch.started)

    # --- recovery, rebalances, offsets ---------------------------------------------

    def _recover_owed(self) -> None:
        sources = sorted(self._to_recover)
        recovered = self.labeled.recover(self.engine, sources, self.clock())
        metrics.recovered.labels("resent").inc(recovered.resent)
        metrics.recovered.labels("present").inc(recovered.present)
        metrics.labeled.inc(recovered.resent)
        self._count(recovered.result)
        if recovered.resent or recovered.present:
            log.info("outboxes of %s: %d examples resent, %d already sent", sources,
                     recovered.resent, recovered.present)  # fmt: skip
        self._to_recover.difference_update(sources)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._to_recover.update(f"{tp.topic}:{tp.partition}" for tp in partitions)
        log.info("assigned %s", [f"{tp.topic}:{tp.partition}" for tp in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # Callbacks run inside `consume`: finish what is in hand, commit it.
        from confluent_kafka import KafkaException

        self._finish_open()
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        try:
            self._commit(asynchronous=False, only=revoked)
        except KafkaException as exc:
            # Say the group moved on already (a member left mid-rebalance): the next
            # owner replays from the last commit, and the claims make that harmless.
            log.warning("committing the revoked partitions failed: %s", exc)
        for key in revoked:
            self._done.pop(key, None)
        log.info("revoked %s", sorted(f"{t}:{p}" for t, p in revoked))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # Another member may own them already: committing them now could move its
        # offsets back. What is in hand is still finished (its effects are
        # idempotent), without their offsets.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        for batch in self._open:
            for key in lost:
                batch.reached.pop(key, None)
        for key in lost:
            self._done.pop(key, None)
        self._finish_open()
        log.warning("lost %s", sorted(f"{t}:{p}" for t, p in lost))

    def _commit(self, asynchronous: bool, only: set[tuple[str, int]] | None = None) -> None:
        from confluent_kafka import TopicPartition

        offsets = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in self._done.items()
            if only is None or (topic, partition) in only
        ]
        if only is None:
            self._dirty = False
            self._last_commit = time.monotonic()
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)

    def _on_commit(self, err: Any, partitions: list[Any]) -> None:
        """A commit that failed (say, mid-rebalance) is made again on the next tick:
        the last batch of a stream must not stay uncommitted."""
        if err is not None or any(tp.error is not None for tp in partitions):
            self._dirty = True

    # --- a consumer that stands still ---------------------------------------------

    def _check_progress(self) -> bool:
        """Every few seconds: is any assigned partition standing still behind its end
        for `stall_seconds`? Then start the consumer afresh. False when `stop` was set."""
        now = time.monotonic()
        if now < self._next_stall_check or self._failing:
            return True
        interval = min(5.0, self.settings.stall_seconds / 3)
        if now - self._next_stall_check > 2 * interval:
            self.stall.reset()  # the loop was away (retrying): no clock ran meanwhile
        self._next_stall_check = now + interval
        from confluent_kafka import KafkaException

        try:
            positions, ends = self._offsets()
        except KafkaException as exc:  # the broker is away: no partition can move
            log.debug("offsets for the stall check unavailable: %s", exc)
            self.stall.reset()
            return True
        stuck = self.stall.stalled(positions, ends, now)
        if not stuck:
            return True
        return self._restart_consumer(stuck)

    def _offsets(self) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Where the consumer reads next in each assigned partition (where it will
        start, when it has read nothing yet) and each partition's end."""
        assignment = self.consumer.assignment()
        if not assignment:
            return {}, {}
        positions: dict[tuple[str, int], int] = {}
        unread = []
        for tp in self.consumer.position(assignment):
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                positions[key] = tp.offset
            elif key in self._done:
                positions[key] = self._done[key] + 1
            else:
                unread.append(tp)
        # Asked through a client of its own: on the consumer's connection the request
        # would wait behind its fetch in flight (up to fetch.wait.max.ms per partition).
        if self._offsets_reader is None:
            self._offsets_reader = make_consumer(self.kafka, JOINER.group_id(self.model_name))
        reader = self._offsets_reader
        ends: dict[tuple[str, int], int] = {}
        starts: dict[tuple[str, int], int] = {}
        for tp in assignment:  # the first failure (broker away) ends the check
            key = (tp.topic, tp.partition)
            starts[key], ends[key] = reader.get_watermark_offsets(tp, timeout=2)
        if unread:  # read nothing yet: it starts at its committed offset, else the start
            for tp in reader.committed(unread, timeout=2):
                key = (tp.topic, tp.partition)
                positions[key] = tp.offset if tp.offset >= 0 else starts[key]
        return positions, ends

    def _restart_consumer(self, stuck: dict[tuple[str, int], tuple[int, int]]) -> bool:
        """Finish what is in hand, commit it, leave the group and join it again with a
        new consumer (its partitions are settled through the outboxes as on any
        assignment). False when `stop` was set meanwhile."""
        from confluent_kafka import KafkaException

        log.warning(
            "no progress for %.0fs although records wait (partition: position/end) %s: "
            "starting the consumer afresh",
            self.settings.stall_seconds,
            {f"{t}:{p}": f"{pos}/{end}" for (t, p), (pos, end) in sorted(stuck.items())},
        )
        metrics.consumer_restarts.inc()
        if not self._finish_open():
            return False
        try:
            self._commit(asynchronous=False)
        except KafkaException as exc:
            log.warning("committing before the restart failed (replayed, harmless): %s", exc)
        try:
            self.consumer.close()  # its revoke callback commits and forgets its partitions
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the stuck consumer failed: %s", exc)
        self._done.clear()
        self.stall.reset()
        self.consumer = self._new_consumer()
        return self._retrying(self._subscribe)

    # --- housekeeping --------------------------------------------------------------

    def _sweep(self) -> None:
        """Count requests whose window ended unjoined (on the Redis thread)."""
        try:
            for _ in range(10):  # bounded: the loop must get back to its consumer
                swept = self.engine.sweep(self.clock())
                metrics.expired.labels("prediction").inc(swept.expired_predictions)
                metrics.expired.labels("outcome").inc(swept.expired_outcomes)
                metrics.pending.set(swept.pending)
                if swept.looked_at < 1000:
                    break
            now = self.clock()
            if self.fairness is not None and now >= self._next_fairness:
                self._next_fairness = now + self.settings.fairness_interval_seconds
                self.fairness.refresh(self.redis, now)
            if self.calibration is not None and now >= self._next_calibration:
                self._next_calibration = now + self.settings.fairness_interval_seconds
                self.calibration.refresh(self.redis, now)
        except RedisError as exc:
            log.warning("sweep failed, trying again later: %s", exc)

    def _count(self, result: BatchResult) -> None:
        metrics.expired.labels("prediction").inc(result.expired_predictions)
        metrics.expired.labels("outcome").inc(result.expired_outcomes)
        for (version, variant), sums in result.quality.items():
            for name, value in sums.items():
                if not is_calibration_field(name):
                    metrics.quality.labels(version, variant, name).inc(value)
        if self.calibration is not None and result.quality:
            self.calibration.saw({version for version, _ in result.quality}, self.clock())
        for (stable, candidate), (compared, agreed) in result.agreement.items():
            metrics.agreement.labels(stable, candidate, "compared").inc(compared)
            metrics.agreement.labels(stable, candidate, "agreed").inc(agreed)
        for (version, variant, segment, group), sums in result.segments.items():
            for name, total in sums.items():
                metrics.segment_quality.labels(version, variant, segment, group, name).inc(total)
        for segment, n in result.folded.items():
            metrics.segment_folded.labels(segment).inc(n)
        if self.fairness is not None and result.segments:
            self.fairness.saw({version for version, *_ in result.segments}, self.clock())

    def _note_failure(self, cause: str, exc: Exception) -> None:
        metrics.retries.labels(cause).inc()
        if not self._failing:
            log.warning("%s failed, retrying until it works: %s", cause, exc)
        self._failing = True
        self.heartbeat.ready = False

    def _retrying(self, step: Callable[[], None]) -> bool:
        """Run `step` until it succeeds (True), or until `stop` is set (False)."""
        from confluent_kafka import KafkaException

        while True:
            try:
                step()
            except (RedisError, KafkaException, DeliveryError) as exc:
                self._note_failure("redis" if isinstance(exc, RedisError) else "kafka", exc)
            else:
                if self._failing:
                    log.info("working again")
                self._failing = False
                self.heartbeat.ready = True
                return True
            if self._stop.wait(self.settings.retry_backoff_seconds):
                return False
            self.heartbeat.beat()
