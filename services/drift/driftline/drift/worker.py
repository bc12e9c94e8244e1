"""The drift monitor process: Kafka in, drift events out (control topic and Redis).

One loop, in this order each turn:

1. Every `reference_refresh_seconds`, ask which version serves (routing table, else
   the `champion` alias). When it changed, fetch its reference from MLflow and build
   a new `DriftMonitor`. A registry that cannot answer keeps the current monitor;
   without any reference yet the worker waits (not ready) and reads nothing, so
   nothing is consumed unwatched. A version registered without a reference (an
   import without a sample) gets one from its first live predictions
   (`live_reference`): the worker reads them, and starts watching once it has them.
2. Consume a batch from the predictions and labeled topics (consumer group
   `driftline-<model>-drift`). A record that does not decode goes to the dead-letter
   topic and is counted.
3. Feed the monitor; pass its detections through the `EventPolicy`; send the events
   to the control topic (flushed) and write the latest to Redis.
4. Commit the batch's offsets, but only once its events are on the control topic: an
   event that could not be sent is retried next turn and holds the commit back.

Window contents live in memory: a restart resumes from the committed offsets with
fresh windows, which costs at most one window of samples for the statistics and
never a duplicate event (the cooldown is restored from Redis).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaException
from redis.exceptions import RedisError

from driftline.api.events import DriftEvent, EventError, LabeledExample, Prediction, decode, encode
from driftline.api.parts import DRIFT
from driftline.common.health import Heartbeat, serve_health
from driftline.common.kafka import DeadLetters, ensure_topics, make_consumer, make_producer
from driftline.common.redis_state import (
    EstimateStore,
    QualityStore,
    RoutingStore,
    drift_key,
    drift_reference_key,
)
from driftline.drift import metrics
from driftline.drift.detectors import Backend, make_backend
from driftline.drift.estimate import PerformanceEstimator
from driftline.drift.event_policy import Detection, EventPolicy
from driftline.drift.live_reference import LiveReference, live_note
from driftline.drift.monitor import DriftMonitor
from driftline.drift.reference import (
    NoReferenceError,
    Reference,
    ReferenceSource,
    ReferenceUnavailableError,
)
from driftline.drift.settings import DriftSettings

log = logging.getLogger(__name__)


class DriftWorker:
    def __init__(self, settings: DriftSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.model = settings.model
        self.name = self.model.name
        self.topics = self.model.topics
        self.group = DRIFT.group_id(self.name)
        conns = settings.connections
        self.kafka = conns.kafka
        self.redis = conns.redis.client(socket_timeout=5, socket_connect_timeout=5)
        self.drift_key = drift_key(self.model.metadata.namespace, self.name)
        self.reference_key = drift_reference_key(self.model.metadata.namespace, self.name)
        spec = self.model.spec
        self.backend = backend or make_backend(
            spec.drift.backend, settings.threshold_cache_dir, settings.seed, settings.threads
        )
        self.config = settings.monitor_config()
        self.policy = EventPolicy(
            self.name, spec.drift.cooldown_seconds, alerting="alert" in spec.drift.on_drift
        )
        self.references = ReferenceSource(
            conns.mlflow_tracking_uri,
            spec.model.registry.name,
            spec.features,
            RoutingStore(self.model.metadata.namespace, self.name),
            self.redis,
            max_rows=settings.reference_max_rows,
        )
        self.estimator = (
            PerformanceEstimator(
                self.name,
                QualityStore(self.model.metadata.namespace, self.name),
                window=spec.drift.window,
                calibration_window_seconds=spec.monitoring.calibration.window_seconds,
                store=EstimateStore(self.model.metadata.namespace, self.name),
            )
            if spec.model.task == "classification"
            else None
        )
        self._estimated_at = 0.0
        # Set-up of online detectors may take a minute (alibi-detect on a busy node):
        # liveness must not kill the process for it.
        self.heartbeat = Heartbeat(timeout_seconds=300)
        self.monitor: DriftMonitor | None = None
        self.collecting: LiveReference | None = None  # a reference from live traffic
        self._note = ""  # where the reference comes from, as status shows it
        self.pending: list[DriftEvent] = []  # sent to Kafka next, before any commit
        self.unsaved: DriftEvent | None = None  # latest event not yet in Redis
        self._checked = 0.0
        self._unavailable = ""  # the last reason the reference could not be had
        self._delivery_errors: list[str] = []

    # --- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        server = serve_health(
            self.settings.metrics_port, self.heartbeat, ready=lambda: self.monitor is not None
        )
        producer = make_producer(self.kafka)
        dead = DeadLetters(producer, self.topics.dead_letter)
        consumer: Any = None
        self._restore_cooldown()
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                self._follow_reference()
                if self.monitor is None and self.collecting is None:
                    stop.wait(min(self.settings.reference_refresh_seconds, 2.0))
                    continue
                if consumer is None:
                    consumer = self._subscribe()
                    if consumer is None:
                        stop.wait(2.0)
                        continue
                if self.monitor is None:
                    self.collect(consumer, dead)
                    continue
                self.heartbeat.ready = True
                self.turn(consumer, producer, dead)
        finally:
            self._deliver(producer)
            if consumer is not None:
                if not self.pending:
                    self._commit(consumer)
                consumer.close()
            producer.flush(10)
            if server is not None:
                server.shutdown()
            log.info("drift monitor stopped")

    def turn(self, consumer: Any, producer: Any, dead: DeadLetters) -> int:
        """One batch: decode, detect, send events, commit. Returns records read."""
        assert self.monitor is not None
        batch = consumer.consume(self.settings.batch_size, self.settings.poll_seconds)
        predictions: list[Prediction] = []
        labeled: list[LabeledExample] = []
        bad = 0
        for msg in batch:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())
                continue
            try:
                if msg.topic() == self.topics.predictions:
                    predictions.append(decode(msg.value(), Prediction))
                else:
                    labeled.append(decode(msg.value(), LabeledExample))
            except EventError as exc:
                dead.send(msg, exc.reason)
                bad += 1
        detections: list[Detection] = []
        if predictions:
            detections += self.monitor.observe_predictions(predictions)
            self._collect_beside(predictions)
            if self.estimator is not None:
                self.estimator.observe(predictions)
        self._estimate()
        if labeled:
            detections += self.monitor.observe_labeled(labeled)
        for detection in detections:
            event = self.policy.decide(detection)
            if event is None:
                metrics.suppressed.labels(self.name, detection.kind).inc()
                continue
            log.warning(
                "drift: %s in %s (version %s, score %.4g, detector %s)",
                event.kind,
                ", ".join(event.features) or "-",
                event.model_version,
                event.score,
                event.detector,
            )
            self.pending.append(event)
            self.unsaved = event
        self._deliver(producer)
        if bad:
            producer.flush(10)
        self._save_latest()
        for msg in batch:
            if msg.error() is None:
                consumer.store_offsets(msg)
        if batch and not self.pending:
            self._commit(consumer)
        return len(batch)

    def _estimate(self) -> None:
        """Now and then: export the accuracy estimated from confidence, per version."""
        now = time.monotonic()
        if (
            self.estimator is None
            or now - self._estimated_at < self.settings.estimate_interval_seconds
        ):
            return
        self._estimated_at = now
        try:
            table = self.references.routing.read(self.redis)
            serving = table.versions() if table is not None else set()
            if self.monitor is not None:
                serving.add(self.monitor.version)
            self.estimator.refresh(self.redis, serving)
        except RedisError as exc:
            log.warning("cannot estimate accuracy from confidence now: %s", exc)

    def collect(self, consumer: Any, dead: DeadLetters) -> int:
        """One batch towards a reference from live traffic; the monitor starts once it is
        complete. The records read are the reference, so their offsets are committed."""
        assert self.collecting is not None
        batch = consumer.consume(self.settings.batch_size, self.settings.poll_seconds)
        predictions: list[Prediction] = []
        for msg in batch:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())
                continue
            if msg.topic() != self.topics.predictions:
                continue  # labels of a version not yet watched: nothing to compare them with
            try:
                predictions.append(decode(msg.value(), Prediction))
            except EventError as exc:
                dead.send(msg, exc.reason)
        if predictions and self.collecting.add(predictions):
            if self.collecting.complete:
                self._watch_live(self.collecting)
            self._set_note(self.collecting.note())
        for msg in batch:
            if msg.error() is None:
                consumer.store_offsets(msg)
        if batch:
            self._commit(consumer)
        return len(batch)

    def _collect_beside(self, predictions: list[Prediction]) -> None:
        """A new version without a reference serves: collect its reference while the
        current monitor goes on; switch once it is complete."""
        live = self.collecting
        if live is None or live.complete or self.monitor is None:
            return
        if live.version == self.monitor.version or not live.add(predictions):
            return
        if live.complete:
            self._watch_live(live)
        self._set_note(live.note())

    # --- reference --------------------------------------------------------------------

    def _follow_reference(self) -> None:
        now = time.monotonic()
        if (
            self.monitor is not None or self.collecting is not None
        ) and now - self._checked < self.settings.reference_refresh_seconds:
            return
        self._checked = now
        try:
            version = self.references.serving_version()
            if version is None:
                if self.monitor is None:
                    log.info("no serving version of %s yet; waiting", self.name)
                return
            if self.monitor is not None and version == self.monitor.version:
                return
            if self.collecting is not None and version == self.collecting.version:
                return  # still collecting this version's reference from live traffic
            reference = self.references.load(version)
        except NoReferenceError as exc:
            if self.monitor is not None and self.monitor.version == exc.version:
                return  # its reference from live traffic is watched already
            self.collecting = LiveReference(
                exc.version, self.model.spec.features, self.settings.live_reference_rows
            )
            log.warning(
                "%s; its first %d live predictions become the reference (until then no drift "
                "is measured)",
                exc,
                self.collecting.rows,
            )
            self._set_note(self.collecting.note())
            return
        except ReferenceUnavailableError as exc:
            # Without any reference (a version whose reference cannot be read) the worker
            # stays not ready and asks again every turn: say so once per reason.
            said = str(exc)
            if said != self._unavailable:
                log.warning("reference unavailable, keeping the current one: %s", exc)
            self._unavailable = said
            return
        self._watch(version, reference)
        if reference.origin.startswith("live"):
            self._set_note(live_note(reference.rows, version))
        else:
            self._set_note(f"the reference sample of version {version} ({reference.rows} rows)")

    def _watch_live(self, live: LiveReference) -> None:
        """Watch against a reference complete from live traffic, and keep it in the
        registry so that a restarted monitor reads it instead of collecting again."""
        self._watch(live.version, live.reference())
        try:
            self.references.keep(live.version, live.arrays(), live.tag())
        except ReferenceUnavailableError as exc:
            metrics.live_reference_unsaved.labels(self.name).inc()
            log.warning("%s; watching with it in memory (a restart collects again)", exc)
            return
        log.info("kept the reference of version %s from live traffic", live.version)

    def _watch(self, version: str, reference: Reference) -> None:
        """Watch `version` against `reference` (new detectors, fresh windows)."""
        started = time.perf_counter()
        try:
            monitor = DriftMonitor(self.name, self.model.spec, reference, self.backend, self.config)
        except ValueError as exc:  # detectors that cannot be configured this way
            log.error("cannot set up the detectors, keeping the current ones: %s", exc)
            return
        old = self.monitor.version if self.monitor else None
        if old is not None:
            metrics.reference_version.labels(self.name, old).set(0)
        metrics.reference_version.labels(self.name, version).set(1)
        log.info(
            "watching %s version %s (was %s); set-up %.2fs",
            self.name,
            version,
            old,
            time.perf_counter() - started,
        )
        self.monitor = monitor
        if self.collecting is not None and self.collecting.version != version:
            self.collecting = None  # another version serves now
        self._unavailable = ""

    def _set_note(self, note: str) -> None:
        """Where the reference comes from, for status (written when it changes)."""
        if note == self._note:
            return
        try:
            self.redis.set(self.reference_key, note)
            self._note = note
        except Exception as exc:  # Redis down: status shows the old note; retried next time
            log.warning("cannot write the reference note to Redis: %s", exc)

    # --- Kafka and Redis --------------------------------------------------------------

    def _subscribe(self) -> Any:
        try:
            ensure_topics(
                self.kafka,
                [
                    self.topics.predictions,
                    self.topics.labeled,
                    self.topics.control,
                    *([self.topics.dead_letter] if self.topics.dead_letter else []),
                ],
                partitions=self.model.spec.kafka.partitions,
            )
        except Exception as exc:  # the broker is down: try again, do not crash
            log.warning("cannot reach Kafka to check topics: %s", exc)
            return None
        return make_consumer(self.kafka, self.group, [self.topics.predictions, self.topics.labeled])

    def _deliver(self, producer: Any) -> None:
        """Send pending events to the control topic; keep the ones that failed."""
        if not self.pending:
            return
        self._delivery_errors = []
        try:
            for event in self.pending:
                producer.produce(
                    self.topics.control,
                    key=self.name.encode(),
                    value=encode(event),
                    on_delivery=self._on_delivery,
                )
        except (BufferError, KafkaException) as exc:  # local queue full, or no broker at all
            self._delivery_errors.append(str(exc))
        left = producer.flush(10)
        if left or self._delivery_errors:
            metrics.event_errors.labels(self.name, "kafka").inc(len(self.pending))
            log.error(
                "drift events not delivered (%s); retrying next turn",
                "; ".join(self._delivery_errors) or f"{left} still queued",
            )
            return
        for event in self.pending:
            metrics.events.labels(self.name, event.kind).inc()
            if event.alerting:
                metrics.alerts.labels(self.name, event.kind).inc()
        self.pending = []

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _save_latest(self) -> None:
        if self.unsaved is None:
            return
        try:
            self.redis.set(self.drift_key, encode(self.unsaved))
            self.unsaved = None
        except Exception as exc:  # Redis down: the event is on Kafka; retry the view later
            metrics.event_errors.labels(self.name, "redis").inc()
            log.warning("cannot write the latest drift event to Redis: %s", exc)

    def _restore_cooldown(self) -> None:
        try:
            data = self.redis.get(self.drift_key)
            if data:
                self.policy.restore(decode(data, DriftEvent))
        except EventError as exc:
            log.warning("ignoring an unreadable drift event in Redis: %s", exc.reason)
        except Exception as exc:
            log.warning("cannot read the latest drift event from Redis: %s", exc)

    @staticmethod
    def _commit(consumer: Any) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:  # nothing stored yet, or a rebalance: next turn
            log.debug("commit skipped: %s", exc)
