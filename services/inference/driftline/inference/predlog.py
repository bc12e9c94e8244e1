"""The prediction log: every prediction to the Kafka predictions topic, off the request path.

A request only appends one record per (version, variant) group to a bounded
in-memory buffer (a deque append). A background task drains the buffer every few
milliseconds: it expands records into one `driftline.api.events.Prediction` per
row, keyed by request id, and hands them to the Kafka producer, whose own queue is
bounded too. A slow or absent broker therefore never blocks or fails a request:
when the buffer is full, new predictions are dropped and counted
(`driftline_inference_predictions_dropped_total{reason}`), and so are those the
producer could not queue or deliver.

A producer that failed fatally (an idempotent producer whose messages timed out
during a long broker outage can be fenced by the broker: every later delivery
fails) is replaced by a new one at the next drain, so the log resumes once the
broker is back instead of dropping every prediction until the process restarts.

With a spool (`driftline.inference.spool`), nothing is dropped while the broker is
away. The log watches, once per drain, how long its oldest unacknowledged record
has waited; past `stall_seconds` (or when the producer's queue is full, or a
delivery failed) it switches to spooling: what the producer holds, in flight or queued,
is purged into the spool, and every later record goes to the spool too, behind
them. Delivery is at least once: records a stalled broker received before it
stalled may arrive twice (at most `stall_seconds` of them; the joiner ignores
duplicates). `SpoolReplay` sends the
spool to the topic in order once the broker takes records again; once it has sent
everything, new records wait in memory for its last acknowledgements and the log
goes back to producing directly. The request path does not change:
while the broker is healthy the spool costs no system call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec

from driftline.api.events import Prediction, Variant, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_producer
from driftline.inference import metrics
from driftline.inference.contract import Array, FeatureValues
from driftline.inference.exploration import Explored
from driftline.inference.spool import Spool
from driftline.inference.spool_replay import SpoolReplay

log = logging.getLogger(__name__)

_BROKEN_PRODUCER = frozenset(
    {"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "_FATAL", "UNKNOWN_PRODUCER_ID"}
)
"""Delivery errors after which this producer will never deliver again."""


LogRecord = tuple[
    Sequence[str],
    Sequence[str | None],
    Sequence[FeatureValues],
    str,
    Variant,
    list[Array],
    float,
    Explored | None,
]
"""(request_ids, entity_ids, feature values, version, variant, outputs, ts, explored)
of some rows of one request, all answered by one version in one variant; `explored`
is None without exploration (`driftline.inference.exploration`). A plain tuple: the
request path builds one per request, and a tuple costs a tenth of a dataclass."""


def _explored(explored: Explored | None, i: int) -> dict[str, Any]:
    """The exploration fields of row `i`'s `Prediction` (none without exploration)."""
    if explored is None:
        return {}
    return {"explored": explored[0][i], "served": explored[1][i], "propensity": explored[2][i]}


def features_struct(names: Sequence[str]) -> type[msgspec.Struct]:
    """A struct that encodes as the JSON object {name: value} of one row's values, given
    positionally in `names` order (fields renamed: any feature name is allowed)."""
    fields = [(f"f{i}", Any) for i in range(len(names))]
    rename = {f"f{i}": name for i, name in enumerate(names)}
    return msgspec.defstruct("Features", fields, rename=rename)


class _Stamp(msgspec.Struct):
    ts: float


_read_ts = msgspec.json.Decoder(_Stamp).decode
"""When a prediction given back by the producer was made (for the join window at replay)."""


class PredictionLog:
    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        model_name: str,
        feature_names: Sequence[str],
        task: str,
        *,
        flagged: bool = False,
        capacity: int,
        flush_seconds: float,
        producer_overrides: dict[str, Any] | None = None,
        spool: Spool | None = None,
        max_age_seconds: float | None = None,
        stall_seconds: float = 2.0,
    ) -> None:
        self.topic = topic
        self.model_name = model_name
        self.names = tuple(feature_names)
        self._features: Callable[..., Any] = features_struct(self.names)
        """Makes a row's `features` for its event (see `features_struct`)."""
        self.classification = task == "classification"
        self.flagged = flagged
        """Whether rows may carry `flags` (some feature has an `onInvalid` policy)."""
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self._buffer: deque[LogRecord] = deque()
        self._rows = 0
        self._overflow = metrics.predictions_dropped_total.labels("buffer_full")
        self._producer_full = metrics.predictions_dropped_total.labels("producer_full")
        self._undelivered = metrics.predictions_dropped_total.labels("delivery")
        self._delivered = metrics.predictions_logged_total
        self._produced = 0
        self._failed = 0
        self._counted = 0
        self._last_warning = 0.0
        self._stopping = False
        self._kafka = kafka
        self._producer_overrides = dict(producer_overrides or {})
        self._broken = False
        self._shed_counted = self._torn_counted = 0
        self._retired: list[Any] = []
        """Replaced producers whose queued messages still report (purged) deliveries."""
        self.spool = spool
        self.producer = self._new_producer()
        self.stall_seconds = stall_seconds
        self.spooling = False
        """New records go to the spool (the broker is away, or the spool is replaying)."""
        self._spooling_since = 0.0
        self._holding_since = 0.0
        self._rescued: list[tuple[str, bytes, float]] = []
        """Records the producer gave back (purged or failed), for the spool."""
        self._sent: deque[tuple[float, int]] = deque()
        """(when, predictions produced by then) per drain that produced: the oldest not
        acknowledged yet says how long the broker has kept us waiting."""
        self._spooled = metrics.predictions_spooled_total
        self._spool_error = metrics.predictions_dropped_total.labels("spool_error")
        self.replay: SpoolReplay | None = None
        if spool is not None:
            self.replay = SpoolReplay(
                spool,
                kafka,
                topic,
                max_age_seconds=max_age_seconds,
                producer_overrides=producer_overrides,
            )
            metrics.predictions_dropped_total.labels("spool_torn").inc(spool.torn)
            self._torn_counted = spool.torn
            if spool.pending:  # left by a previous process: replay it first
                log.info("%d prediction(s) in the spool; replaying them", spool.pending)
                self.spooling = True

    def _new_producer(self) -> Any:
        return make_producer(
            self._kafka,
            **{
                "queue.buffering.max.messages": self.capacity,
                # With a spool a record never times out: when the broker stalls, the log
                # takes its records back into the spool; without one, it is dropped.
                "message.timeout.ms": 0 if self.spool is not None else 30_000,
                # Larger, fewer produce requests: the log is not latency-critical.
                "linger.ms": 50,
                # Only failures call back into Python; deliveries are counted in bulk.
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
                "logger": logging.getLogger("driftline.inference.kafka"),
                **self._producer_overrides,
            },
        )

    @property
    def buffered(self) -> int:
        return self._rows

    def add(self, record: LogRecord) -> None:
        """Take a record for the log, or count it dropped when the buffer is full. Never blocks."""
        n = len(record[0])
        if self._rows + n > self.capacity:
            self._overflow.inc(n)
            return
        self._buffer.append(record)
        self._rows += n

    async def run(self) -> None:
        """Drain the buffer into the producer until `stop()`."""
        while not self._stopping:
            await asyncio.sleep(self.flush_seconds)
            self.drain()

    def stop(self) -> None:
        self._stopping = True

    def drain(self) -> int:
        """Hand what is buffered to the producer; returns the predictions handed over."""
        if self._broken:
            self._replace_producer()
        if self.spool is not None:
            if self._rescued and not self.spooling:
                self._start_spooling()  # a delivery failed: the broker is away
            if self.spooling:
                self._to_spool()
                return 0
        produced = 0
        produce = self.producer.produce
        topic = self.topic
        while self._buffer:
            record = self._buffer.popleft()
            request_ids, entity_ids, values, version, variant, outputs, ts, explored = record
            self._rows -= len(request_ids)
            for i, request_id, payload in self._encoded(record):
                try:
                    produce(topic, payload, request_id)
                except BufferError:
                    # librdkafka's queue is full (the broker is slow or away): spool the
                    # rest, or drop the rest of this record and leave later ones buffered.
                    if self.spool is not None:
                        rest: LogRecord = (
                            request_ids[i:], entity_ids[i:], values[i:], version, variant,
                            [o[i:] for o in outputs], ts,
                            None if explored is None else (
                                explored[0][i:], explored[1][i:], explored[2][i:]),
                        )  # fmt: skip
                        self._buffer.appendleft(rest)
                        self._rows += len(request_ids) - i
                        self._produced += produced
                        self._start_spooling()
                        self._to_spool()
                        return produced
                    self._producer_full.inc(len(request_ids) - i)
                    self._warn("the Kafka producer queue is full; dropping predictions")
                    break
                produced += 1
            else:
                continue
            break
        self._produced += produced
        self.producer.poll(0)
        for retired in self._retired:
            retired.poll(0)
        self._retired = [p for p in self._retired if len(p)]
        self._count_delivered()
        if self.spool is not None and self._stalled(produced):
            self._start_spooling()
            self._to_spool()
        return produced

    # --- the spool ---------------------------------------------------------------------------

    def _stalled(self, produced: int) -> bool:
        """The oldest record not acknowledged has waited `stall_seconds` (one clock read
        and a few integer operations per drain)."""
        now = time.monotonic()
        if produced:
            self._sent.append((now, self._produced))
        # Delivered or failed, a record is no longer waiting.
        done = self._produced - len(self.producer) - sum(len(p) for p in self._retired)
        sent = self._sent
        while sent and sent[0][1] <= done:
            sent.popleft()
        return bool(sent) and now - sent[0][0] > self.stall_seconds

    def _start_spooling(self) -> None:
        """Take back what the producer holds (purged reports land in `_rescued`) and
        spool from now on. Records in flight are taken back too, so that a kill -9
        during the outage cannot lose them; a paused broker that wrote them before it
        stalled will have them twice (the joiner ignores duplicates)."""
        assert self.spool is not None
        self.spooling = True
        self._spooling_since = time.monotonic()
        self._sent.clear()
        # A new producer for when the broker is back: an idempotent one whose records
        # in flight were purged fails for good once it reconnects.
        old = self.producer
        old.purge(in_queue=True, in_flight=True)
        old.poll(0)
        self._retired.append(old)
        self.producer = self._new_producer()
        self._warn("the broker does not take predictions; spooling them to disk")

    def _to_spool(self) -> None:
        """Spool what the producer gave back, then the buffer; replay a step."""
        assert self.spool is not None and self.replay is not None
        self.producer.poll(0)
        for retired in self._retired:
            retired.poll(0)
        self._retired = [p for p in self._retired if len(p)]
        held = bool(self._retired) or len(self.producer) > 0
        if held and time.monotonic() - self._spooling_since < 1.0:
            # Reports of purged records in flight come a little later: they are older
            # than the buffer, so the buffer waits for them (in memory, for a moment).
            return
        # Purge reports come queue by queue; the answer time puts them back in order.
        records, self._rescued = sorted(self._rescued, key=lambda r: r[2]), []
        if not records and self._catching_up():
            # The replay has sent all there is: new records wait in memory for its
            # last acknowledgements, then go straight to Kafka (spooled, they would
            # keep the replay one step behind for as long as traffic flows).
            buffered = []
        else:
            buffered = list(self._buffer)
            self._buffer.clear()
            self._rows = 0
        for record in buffered:
            records.extend(self._payloads(record))
        if records:
            try:
                self.spool.append(records)
                self._spooled.inc(len(records))
            except OSError as exc:
                self._spool_error.inc(len(records))
                self._warn(f"could not write to the spool: {exc}")
        shed, torn = self.spool.shed - self._shed_counted, self.spool.torn - self._torn_counted
        if shed or torn:  # counted by the spool, where it happens
            self._shed_counted += shed
            self._torn_counted += torn
            metrics.predictions_dropped_total.labels("spool_shed").inc(shed)
            metrics.predictions_dropped_total.labels("spool_torn").inc(torn)
        self.spool.tick()
        # What an old producer still holds is older than the spool: it goes first.
        if not held and self.replay.step():
            self.spooling = False
            self.spool.reset()
            log.info("the spool is replayed; logging straight to Kafka again")
        metrics.spool_bytes.set(self.spool.bytes)

    def _catching_up(self) -> bool:
        """The replay is caught up and the broker takes records: hold the buffer, for
        at most `stall_seconds` (then the broker is away again: spool it)."""
        assert self.replay is not None
        now = time.monotonic()
        if not self.replay.caught_up:
            self._holding_since = 0.0
            return False
        if not self._holding_since:
            self._holding_since = now
        return now - self._holding_since < self.stall_seconds

    def _encoded(self, record: LogRecord) -> Iterator[tuple[int, str, bytes]]:
        """(row, request id, JSON event) of each row of `record`; a row that cannot be
        encoded is logged and left out (it must not stop the log)."""
        request_ids, entity_ids, values, version, variant, outputs, ts, explored = record
        labels = outputs[0].tolist()
        scores = outputs[1].tolist() if self.classification else None
        features, whole = self._features, len(self.names)
        for i, request_id in enumerate(request_ids):
            row = values[i]
            try:
                event = Prediction(
                    request_id=request_id,
                    model=self.model_name,
                    model_version=version,
                    variant=variant,
                    # A struct of this model's feature names, not a dict: the same JSON
                    # object, built at C speed (a dict per row was half the encoding).
                    features=features(*row) if len(row) == whole else self._dict(row),
                    output=float(labels[i]),
                    ts=ts,
                    entity_id=entity_ids[i],
                    scores=scores[i] if scores is not None else None,
                    flags=getattr(row, "flags", None) if self.flagged else None,
                )
                if explored is not None:
                    event = msgspec.structs.replace(event, **_explored(explored, i))
                payload = encode(event)
            except Exception:  # a prediction that cannot be encoded must not stop the log
                log.exception("could not log a prediction of version %s", version)
                continue
            yield i, request_id, payload

    def _dict(self, row: FeatureValues) -> Any:
        """The features of a row that does not hold one value per name (as many as both have)."""
        return dict(zip(self.names, row))  # noqa: B905

    def _payloads(self, record: LogRecord) -> list[tuple[str, bytes, float]]:
        ts = record[6]
        return [(request_id, payload, ts) for _, request_id, payload in self._encoded(record)]

    def stats(self) -> dict[str, Any]:
        """What the log did, for people and tests: counts since start, the spool's state."""
        spool = self.spool
        return {
            "spooling": self.spooling,
            "buffered": self._rows,
            "spooled": spool.appended if spool else 0,
            "replayed": self.replay.replayed if self.replay else 0,
            "expired": self.replay.expired if self.replay else 0,
            "shed": spool.shed if spool else 0,
            "torn": spool.torn if spool else 0,
            "spool_pending": spool.pending if spool else 0,
            "spool_bytes": spool.bytes if spool else 0,
        }

    def _replace_producer(self) -> None:
        """Swap a producer that failed fatally for a new one; its queue fails (counted)."""
        self._broken = False
        old = self.producer
        old.purge()
        old.poll(0)
        self._retired.append(old)
        self.producer = self._new_producer()
        log.warning("the Kafka producer failed for good; logging through a new one")
        metrics.producer_restarts_total.inc()

    def _count_delivered(self) -> None:
        """Produced, not failed and no longer queued means delivered."""
        queued = len(self.producer) + sum(len(p) for p in self._retired)
        delivered = self._produced - self._failed - queued
        if delivered > self._counted:
            self._delivered.inc(delivered - self._counted)
            self._counted = delivered

    async def close(self, timeout: float) -> None:
        """Drain, then wait (off the loop) up to `timeout` for the producer to deliver.

        With a spool, what is not delivered by then is spooled, for the next start."""
        self.stop()
        self.drain()
        if self.spool is not None and self.replay is not None:
            await self._close_spooled(timeout)
            return
        left = await asyncio.to_thread(self.producer.flush, timeout)
        self._count_delivered()
        if left:
            self._undelivered.inc(left)
            log.warning("%d prediction(s) not delivered at shutdown", left)

    async def _close_spooled(self, timeout: float) -> None:
        assert self.spool is not None and self.replay is not None
        if self.spooling:
            await asyncio.to_thread(self.replay.flush, timeout)
        else:
            await asyncio.to_thread(self.producer.flush, timeout)
        for producer in (self.producer, *self._retired):
            producer.purge(in_queue=True, in_flight=True)
            producer.poll(0)
        self._count_delivered()
        # What the producers gave back is older than what the buffer still holds.
        records, self._rescued = sorted(self._rescued, key=lambda r: r[2]), []
        for record in self._buffer:
            records.extend(self._payloads(record))
        self._buffer.clear()
        self._rows = 0
        if records:
            log.warning("%d prediction(s) not delivered at shutdown; spooled", len(records))
            self.spool.append(records)
            self._spooled.inc(len(records))
        self.spool.sync()
        self.replay.close()
        self.replay.save()
        self.spool.close()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None and self.spool is not None:
            # Given back (purged, timed out): the spool keeps it. (This producer was
            # made with `delivery.report.only.error`: a failure is all it reports.)
            self._failed += 1
            value = msg.value()
            self._rescued.append((msg.key().decode(), value, _read_ts(value).ts))
            if err.fatal() or err.name() in _BROKEN_PRODUCER:
                self._broken = True
            return
        if err is not None:  # only failures are reported (delivery.report.only.error)
            self._failed += 1
            self._undelivered.inc()
            self._warn(f"a prediction was not delivered: {err}")
            if err.fatal() or err.name() in _BROKEN_PRODUCER:
                self._broken = True

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._broken = True
        self._warn(f"Kafka: {err}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:  # a broker that is away would flood the log
            self._last_warning = now
            log.warning(message)
