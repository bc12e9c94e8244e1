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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from driftline.api.events import Prediction, Variant, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_producer
from driftline.inference import metrics
from driftline.inference.contract import Array, FeatureValues

log = logging.getLogger(__name__)

_BROKEN_PRODUCER = frozenset(
    {"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "_FATAL", "UNKNOWN_PRODUCER_ID"}
)
"""Delivery errors after which this producer will never deliver again."""


LogRecord = tuple[
    Sequence[str], Sequence[str | None], Sequence[FeatureValues], str, Variant, list[Array], float
]
"""(request_ids, entity_ids, feature values, version, variant, outputs, ts) of some rows
of one request, all answered by one version in one variant. A plain tuple: the request
path builds one per request, and a tuple costs a tenth of a dataclass."""


class PredictionLog:
    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        model_name: str,
        feature_names: Sequence[str],
        task: str,
        *,
        capacity: int,
        flush_seconds: float,
        producer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.model_name = model_name
        self.names = tuple(feature_names)
        self.classification = task == "classification"
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
        self._retired: list[Any] = []
        """Replaced producers whose queued messages still report (purged) deliveries."""
        self.producer = self._new_producer()

    def _new_producer(self) -> Any:
        return make_producer(
            self._kafka,
            **{
                "queue.buffering.max.messages": self.capacity,
                "message.timeout.ms": 30_000,
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
        produced = 0
        produce = self.producer.produce
        topic = self.topic
        names, model = self.names, self.model_name
        classification = self.classification
        while self._buffer:
            request_ids, entity_ids, values, version, variant, outputs, ts = self._buffer.popleft()
            self._rows -= len(request_ids)
            labels = outputs[0].tolist()
            scores = outputs[1].tolist() if classification else None
            for i, request_id in enumerate(request_ids):
                try:
                    payload = encode(
                        Prediction(
                            request_id=request_id,
                            model=model,
                            model_version=version,
                            variant=variant,
                            features=dict(zip(names, values[i])),  # noqa: B905 - rows fit names
                            output=float(labels[i]),
                            ts=ts,
                            entity_id=entity_ids[i],
                            scores=scores[i] if scores is not None else None,
                        )
                    )
                    produce(topic, payload, request_id)
                except BufferError:
                    # librdkafka's queue is full (the broker is slow or away): drop the
                    # rest of this record, leave later ones buffered for the next drain.
                    self._producer_full.inc(len(request_ids) - i)
                    self._warn("the Kafka producer queue is full; dropping predictions")
                    break
                except Exception:  # a prediction that cannot be encoded must not stop the log
                    log.exception("could not log a prediction of version %s", version)
                    continue
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
        return produced

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
        """Drain, then wait (off the loop) up to `timeout` for the producer to deliver."""
        self.stop()
        self.drain()
        left = await asyncio.to_thread(self.producer.flush, timeout)
        self._count_delivered()
        if left:
            self._undelivered.inc(left)
            log.warning("%d prediction(s) not delivered at shutdown", left)

    def _on_delivery(self, err: Any, msg: Any) -> None:
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
