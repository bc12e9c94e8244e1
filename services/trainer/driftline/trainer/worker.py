"""The online trainer process: consume, learn, publish, checkpoint, commit.

One consumer in group `driftline-<model>-trainer` reads the labeled topic and the
control topic. Labeled records are decoded in batches and learned; a drift event
on the control topic is applied between the records that came before and after
it. Every `publish.everySamples` rows or `publish.everySeconds` seconds, whichever
comes first, the publisher gates the weights and, if they pass, stages a version.

Durability, in this order: stage the version's files, write the checkpoint
(weights, optimizer, replay, Fisher, offsets, the staged key), flush the dead
letters, commit the offsets, then register the staged version. On restart the
checkpoint's offsets win over the group's (the consumer is positioned there
when partitions are assigned), so nothing is learned twice or skipped, and a
staged version is registered exactly once.

Nothing here stops the stream: bad records go to the dead letters, MLflow
failures leave the version staged and are retried, and SIGTERM finishes the
batch in hand, checkpoints, commits and exits 0.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from driftline.api import artifacts
from driftline.api.events import DriftEvent
from driftline.api.parts import TRAINER
from driftline.api.resource import DynamicModel
from driftline.common.health import Heartbeat
from driftline.common.kafka import DeadLetters, ensure_topics, make_consumer, make_producer
from driftline.common.model_signature import signing_key
from driftline.common.registry import RegistryError
from driftline.trainer import metrics
from driftline.trainer.adapter import AdapterLearner, FrozenBase, baseline
from driftline.trainer.checkpoint import (
    from_bytes,
    learner_state,
    restore_learner,
    to_bytes,
    write_atomic,
)
from driftline.trainer.decode import LabeledDecoder
from driftline.trainer.export import ExportError
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.progress import Progress
from driftline.trainer.publish import Publisher
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.signals import read_control, respond
from driftline.trainer.versions import STATE_ARTIFACT, ModelVersions, has_state

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0


class CheckpointDirError(RuntimeError):
    """The checkpoint directory cannot be written: a deployment error, said plainly."""


def tune_gc() -> None:
    """Make Python's cycle collector cheap for a stream of short-lived records.

    Decoding allocates a few container objects per record; with the default
    thresholds the collector runs every 700 of them and now and then walks the
    whole heap (torch, MLflow: about a million objects), which halved the decode
    rate in the throughput benchmark. Freezing what exists after start-up takes it
    out of those walks, and a higher first threshold means fewer, larger passes.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class TrainerWorker:
    def __init__(self, settings: TrainerSettings, model: DynamicModel | None = None) -> None:
        self.settings = settings
        self.model = model or settings.model
        spec = self.model.spec
        self.topics = self.model.topics
        self.group = TRAINER.group_id(self.model.name)
        self.versions = ModelVersions(
            settings.connections.mlflow_tracking_uri,
            spec.model.registry.name,
            signing_key(spec.model.signing, settings.secrets_dir),
        )
        self.publisher = Publisher(settings, self.model, self.versions)
        self.checkpoint_path = settings.checkpoint_dir / "checkpoint.npz"
        self.heartbeat = Heartbeat()
        self.stop = threading.Event()
        self.learner: OnlineLearner | None = None
        self.progress = Progress()
        self.last_attempt = time.monotonic()
        self.publish_soon = False
        self._consumer: Any = None
        self._producer: Any = None
        self._last_checkpoint = time.monotonic()
        self._retry_at = 0.0

    # -- start ----------------------------------------------------------------------

    def _new_learner(self) -> OnlineLearner:
        spec = self.model.spec
        options = LearnerOptions.from_spec(
            spec.model, spec.training, spec.drift, **self.settings.learner_settings()
        )
        if spec.model.strategy == "adapter":
            base = self._frozen_base()
            if base is not None:
                return AdapterLearner(spec.model, spec.features, options, base)
        return OnlineLearner(spec.model, spec.features, options)

    def _frozen_base(self) -> FrozenBase | None:
        """The `baseline` version's graph, which the adapter learns on (waits for one)."""
        spec = self.model.spec
        while not self.stop.is_set():
            try:
                base = baseline(self.versions, spec)
                if base is not None:
                    log.info("strategy adapter: learning on baseline version %s", base.version)
                    return base
                log.warning(
                    "strategy adapter: no version of %s is aliased 'baseline' yet: import a "
                    "model (python -m driftline.trainer import); waiting",
                    self.versions.name,
                )
            except RegistryError as exc:
                metrics.registry_errors.inc()
                log.warning("%s; retrying", exc)
            self.heartbeat.beat()
            self.stop.wait(RETRY_SECONDS)
        return None

    def resume(self) -> OnlineLearner:
        """Learner state from the checkpoint, else from the champion's state artifact."""
        learner = self._new_learner()
        if self.stop.is_set():  # stopped while waiting for the adapter's baseline
            return learner
        if self.checkpoint_path.exists():
            arrays, meta = from_bytes(self.checkpoint_path.read_bytes())
            restore_learner(learner, arrays, meta)
            self.progress = Progress.from_meta(meta["worker"])
            log.info(
                "resumed from checkpoint: %d rows seen, epoch %d, parent version %s",
                learner.seq,
                learner.epoch,
                self.progress.parent,
            )
        else:
            while not self.stop.is_set():
                try:
                    champion = self.versions.by_alias(artifacts.ALIAS_CHAMPION)
                    if champion is not None and not has_state(champion):
                        # An imported champion without labelled rows: the learner starts
                        # fresh beside it and must pass the gate against it to publish.
                        self.progress.parent = champion.version
                        log.info(
                            "champion version %s was imported without a training state; "
                            "a new learner starts beside it",
                            champion.version,
                        )
                        break
                    if champion is not None:
                        arrays, meta = from_bytes(self.versions.download(champion, STATE_ARTIFACT))
                        restore_learner(learner, arrays, meta)
                        learner.forget_recent()
                        self.progress.parent = champion.version
                        log.info("starting from champion version %s", champion.version)
                        break
                    log.warning(
                        "no version of %s is aliased 'champion' yet: run "
                        "`python -m driftline.trainer bootstrap`; waiting",
                        self.versions.name,
                    )
                except RegistryError as exc:
                    metrics.registry_errors.inc()
                    log.warning("%s; retrying", exc)
                self.heartbeat.beat()
                self.stop.wait(RETRY_SECONDS)
        self.publisher.discard_except(self.progress.staged_key)
        metrics.concept_epoch.set(learner.epoch)
        return learner

    def _check_volume(self) -> None:
        """Fail at start, clearly, when the checkpoint cannot be written (not at a publish)."""
        folder = self.settings.checkpoint_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CheckpointDirError(
                f"DRIFTLINE_TRAINER_CHECKPOINT_DIR={folder} is not writable ({exc}); mount a "
                "volume there or point the setting at a writable directory"
            ) from exc

    def connect(self) -> None:
        conn = self.settings.connections.kafka
        topics = [self.topics.labeled, self.topics.control]
        ensure_topics(
            conn,
            [*topics, *([self.topics.dead_letter] if self.topics.dead_letter else [])],
            partitions=self.model.spec.kafka.partitions,
        )
        self._producer = make_producer(conn)
        self._consumer = make_consumer(conn, self.group)
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        # The checkpoint is the truth: offsets committed to the group may lag behind it.
        for tp in partitions:
            position = self.progress.positions.get(f"{tp.topic}:{tp.partition}")
            if position is not None:
                tp.offset = position
        consumer.incremental_assign(partitions)
        log.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self.learner is not None and partitions:
            self.checkpoint()
        consumer.incremental_unassign(partitions)

    # -- the loop -------------------------------------------------------------------

    def run(self) -> None:
        self._check_volume()
        self.learner = self.resume()
        if self.stop.is_set():
            return
        self._finish_staged()
        self.connect()
        dead = DeadLetters(self._producer, self.topics.dead_letter)
        learner = self.learner
        spec = self.model.spec
        decoder = LabeledDecoder(
            learner.layout,
            learner.encoder,
            self.model.name,
            spec.model.task,
            spec.model.classes,
            dead,
            spec.training.exploration.max_weight if spec.training.exploration else None,
        )
        self.heartbeat.ready = True
        tune_gc()
        try:
            while not self.stop.is_set():
                self.heartbeat.beat()
                msgs = self._consumer.consume(
                    self.settings.consume_max, self.settings.consume_timeout
                )
                self._handle(msgs, decoder, dead)
                self._producer.poll(0)
                self._maybe_publish()
                if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_seconds:
                    self.checkpoint()
        finally:
            self.heartbeat.ready = False
            self._shutdown()

    def _handle(self, msgs: list[Any], decoder: LabeledDecoder, dead: DeadLetters) -> None:
        labeled: list[Any] = []
        for msg in msgs:
            if msg.error() is not None:
                log.debug("consumer: %s", msg.error())
                continue
            if msg.topic() == self.topics.labeled:
                labeled.append(msg)
                continue
            self._learn(labeled, decoder)  # what came before the event is learned first
            labeled = []
            self._control(msg, dead)
            self.progress.advance(msg.topic(), msg.partition(), msg.offset())
        self._learn(labeled, decoder)

    def _learn(self, msgs: list[Any], decoder: LabeledDecoder) -> None:
        if not msgs:
            return
        assert self.learner is not None
        decoded = decoder.decode(msgs)
        ex = decoded.examples
        progress = self.progress
        if decoded.stable_version and decoded.stable_version != progress.stable_version:
            # A promotion: the new stable version's error rate starts from scratch.
            self.learner.monitor.reset()
            progress.stable_version = decoded.stable_version
        report = self.learner.learn(ex)
        topic = self.topics.labeled
        if len(ex):
            progress.learned(topic, decoded.partitions, decoded.offsets)
        # Every record moves the position, dead-lettered ones too: their effect is durable.
        ends: dict[int, int] = {}
        for msg in msgs:
            ends[msg.partition()] = max(ends.get(msg.partition(), -1), msg.offset())
        for partition, offset in ends.items():
            progress.advance(topic, partition, offset)
        progress.rows_since_attempt += len(ex)
        metrics.examples.labels("held_out").inc(report.held_out)
        metrics.examples.labels("learned").inc(report.rows - report.held_out)
        metrics.examples.labels("dead_letter").inc(decoded.dead)
        if report.concept is not None:
            log.info("concept epoch %d opened: %s", report.concept.epoch, report.concept.reason)
            metrics.concept_epoch.set(self.learner.epoch)
            metrics.drift_events.labels("concept", "epoch").inc()
            self.publish_soon = True
        if report.covariate:
            log.info("error rose with shifted inputs %s: a covariate shift", report.covariate)

    def _control(self, msg: Any, dead: DeadLetters) -> None:
        control = read_control(msg.value())
        if control.error is not None:
            dead.send(msg, control.error)
            metrics.examples.labels("dead_letter").inc()
            return
        event = control.event
        if event is None or event.model != self.model.name:
            return
        if event.event_id in self.progress.seen_events:
            return
        self.progress.seen_events.append(event.event_id)
        self.on_drift(event)

    def on_drift(self, event: DriftEvent) -> None:
        """Act on a drift signal (see `signals.respond`)."""
        assert self.learner is not None
        action, record = respond(self.learner, event, self.model.spec.drift)
        metrics.drift_events.labels(event.kind, action).inc()
        if record is not None:
            log.info("concept epoch %d opened: %s", record.epoch, record.reason)
            metrics.concept_epoch.set(self.learner.epoch)
        if action != "none":
            self.publish_soon = True

    # -- publishing -----------------------------------------------------------------

    def _maybe_publish(self) -> None:
        assert self.learner is not None
        now = time.monotonic()
        if now < self._retry_at:
            return
        progress = self.progress
        if progress.staged_key is not None:
            self._finish_staged()
            return
        publish = self.model.spec.training.publish
        due = progress.rows_since_attempt >= publish.every_samples or (
            progress.rows_since_attempt > 0 and now - self.last_attempt >= publish.every_seconds
        )
        if (due or self.publish_soon) and progress.lineage:
            self._attempt()

    def _attempt(self) -> None:
        assert self.learner is not None
        started = time.perf_counter()
        try:
            decision = self.publisher.gate(self.learner)
        except RegistryError as exc:
            metrics.registry_errors.inc()
            log.warning("cannot gate: %s; retrying in %.0fs", exc, RETRY_SECONDS)
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        if decision is None:  # too few held-out rows in this epoch yet: try again later
            return
        progress = self.progress
        self.publish_soon = False
        progress.rows_since_attempt = 0
        self.last_attempt = time.monotonic()
        metrics.holdout_score.labels("new").set(decision.new.holdout)
        metrics.holdout_score.labels("serving").set(decision.serving.holdout)
        progress.gate_history.append({"publish": decision.publish, "reason": decision.reason})
        if not decision.publish:
            metrics.gate_decisions.labels("rejected", decision.kind).inc()
            log.info("not published: %s", decision.reason)
            self._record_rejection(decision.to_json(), decision.metrics())
            return
        try:
            staged = self.publisher.build(
                self.learner,
                decision.to_json(),
                decision.metrics(),
                dict(progress.lineage),
                progress.parent,
                [artifacts.ALIAS_CANDIDATE],
            )
        except ExportError as exc:
            metrics.gate_decisions.labels("rejected", "export").inc()
            log.error("not published: %s", exc)
            return
        self.publisher.stage(staged)
        progress.staged_key = staged.key
        progress.lineage = {}
        self.checkpoint()
        self._finish_staged()
        metrics.gate_decisions.labels("published", "beats").inc()
        metrics.publish_seconds.observe(time.perf_counter() - started)

    def _finish_staged(self) -> None:
        progress = self.progress
        if progress.staged_key is None:
            return
        try:
            version = self.publisher.complete(progress.staged_key)
        except RegistryError as exc:
            metrics.registry_errors.inc()
            log.warning("version staged, not yet registered: %s; retrying", exc)
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        log.info("published %s version %s as candidate", self.versions.name, version)
        metrics.published_version.set(float(version))
        progress.parent = version
        progress.staged_key = None
        if self.learner is not None:
            self.checkpoint()

    def _record_rejection(self, gate_json: str, values: dict[str, float]) -> None:
        tags = {
            artifacts.TAG_GATE: gate_json,
            artifacts.TAG_PARENT_VERSION: self.progress.parent or "",
        }
        try:
            self.versions.record_rejection(tags, values)
        except RegistryError as exc:
            metrics.registry_errors.inc()
            log.warning("gate decision not recorded in MLflow: %s", exc)

    # -- durability -----------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write the checkpoint, then commit the offsets it contains."""
        assert self.learner is not None
        started = time.perf_counter()
        arrays, meta = learner_state(self.learner)
        meta["worker"] = self.progress.to_meta()
        write_atomic(self.checkpoint_path, to_bytes(arrays, meta))
        self._last_checkpoint = time.monotonic()
        metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        self._commit()

    def _commit(self) -> None:
        if self._consumer is None:
            return
        from confluent_kafka import KafkaException, TopicPartition

        if self._producer is not None:
            self._producer.flush(10)  # dead letters are durable before their offsets move
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        offsets = [TopicPartition(*o) for o in self.progress.commit_offsets(assigned)]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # the checkpoint holds the positions: nothing is lost
            log.warning("offset commit failed: %s", exc)

    def _shutdown(self) -> None:
        try:
            if self.learner is not None:
                if self.progress.staged_key is not None:
                    self._finish_staged()
                self.checkpoint()
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                self._producer.flush(10)
                self._producer = None
