"""Scheduled retraining: a fresh network on the joined history of the labeled topic.

    python -m driftline.trainer retrain      # what the CronJob and `driftline up`'s timer run

One run reads the labeled topic (the joiner's examples) from the offsets Kafka gives
for `now - training.schedule.historySeconds` (`offsets_for_times`) to each
partition's end as the run starts, keeping records whose timestamp is inside the
window (a broker may answer the time lookup at batch granularity; the timestamp
filter makes the window exact either way). Memory is bounded: at most
`training.schedule.maxRows` rows are kept, the newest by label time; older rows are
dropped while reading, never more than twice the cap held at once.

A fresh network is trained on the window's training rows (the held-out split is the
online learner's: a hash of the row's partition and offset), then goes the online
versions' way: the same gate against the champion (`Publisher.gate`), the same
export and checks (`Publisher.build`) and the same registration, which moves the
`candidate` alias; the rollout controller takes it through shadow and canary as it
does any candidate. Its tags carry the lineage of an online version (`driftline.offsets`
is the first and last offset per partition of the rows it learned) plus the row count,
the window, and each partition's end, so the next run can tell whether anything is new.

With `spec.model.strategy: adapter` the fresh network is a fresh adapter on the
`baseline` version (the frozen import), and the version is the two merged.

From Feast (`retrain --from-feast ENTITIES --feast-repo REPO`, or the settings
`DRIFTLINE_TRAINER_RETRAIN_FROM_FEAST` and `DRIFTLINE_TRAINER_FEAST_REPO`) a run
reads its rows from a labeled entity file (or Parquet folder) the user keeps up to
date instead of the labeled topic: each `source.feast` feature is joined point in
time with Feast's offline store, as `bootstrap --from-feast` joins it
(`driftline.trainer.feast_history`). The window and the cap apply to the rows'
`event_timestamp`; a row's position in the file is its key (the held-out split), so
keep the file append-only. The lineage tag is `feast:<file>` -> [first, last] row,
and "nothing new" means the same rows as the last scheduled version (a hash of them).

A run publishes nothing, and says why, when the window holds no rows, when no
partition has grown since the last scheduled version (its `driftline.history_ends`),
when the epoch has too few held-out rows for the gate, or when the gate rejects.
Registration is idempotent by publish key (a hash of the offset ranges), so a run
that is retried after registering registers nothing twice. No checkpoint: a run
starts from nothing and either registers a version or does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from driftline.api import artifacts
from driftline.api.parts import TRAINER
from driftline.common.connections import KafkaConnection
from driftline.common.feature_values import FeatureValueError
from driftline.common.kafka import DeadLetters, end_offsets, make_consumer
from driftline.trainer.adapter import AdapterLearner, baseline
from driftline.trainer.bootstrap import (
    DataError,
    check_labels,
    data_fingerprint,
    examples_from_rows,
)
from driftline.trainer.decode import PARTITION_SHIFT, LabeledDecoder
from driftline.trainer.examples import Examples
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.publish import Publisher, publish_key
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import ModelVersions

log = logging.getLogger(__name__)

TAG_TRAINING: Final = "driftline.training"  # "scheduled" on versions a retrain made
TAG_HISTORY_ENDS: Final = "driftline.history_ends"  # JSON {"partition": end offset}
TAG_HISTORY_SINCE: Final = "driftline.history_since"  # window start, seconds since the epoch
TAG_ROWS: Final = "driftline.rows"  # rows the version was trained and gated on
TAG_HISTORY_SOURCE: Final = "driftline.history_source"  # "feast:<entity file>" (from Feast)
SCHEDULED: Final = "scheduled"


@dataclass
class History:
    """The rows of the window (newest `max_rows`) and where each partition ended."""

    examples: Examples
    ends: dict[int, int]
    since: float
    read: int = 0
    dropped: int = 0
    dead: int = 0

    def offsets(self, topic: str) -> dict[str, list[int]]:
        """`topic:partition` -> [first, last] offset of the rows kept (the lineage tag)."""
        partitions = self.examples.key >> PARTITION_SHIFT
        offsets = self.examples.key & ((1 << PARTITION_SHIFT) - 1)
        out: dict[str, list[int]] = {}
        for p in np.unique(partitions):
            mine = offsets[partitions == p]
            out[f"{topic}:{int(p)}"] = [int(mine.min()), int(mine.max())]
        return out


@dataclass(frozen=True)
class FeastHistory:
    """Where a retrain from Feast reads: the labeled entity rows and the feature repository."""

    entities: Path
    repo: Path
    label_column: str = "label"


def read_feast_history(
    settings: TrainerSettings, source: FeastHistory, learner: OnlineLearner, since: float
) -> Examples:
    """The entity rows stamped at or after `since`, joined point in time with Feast; the
    newest `training.schedule.maxRows`. Raises `DataError` as `bootstrap --from-feast`."""
    from driftline.trainer.feast_history import joined_from_feast

    model = settings.model
    rows, labels, times = joined_from_feast(
        model, source.entities, source.repo, settings.feast_python, source.label_column
    )
    inside = np.flatnonzero(times >= since)
    rows = [rows[i] for i in inside]
    try:
        ex = examples_from_rows(learner, rows, labels[inside])
    except FeatureValueError as exc:
        raise DataError(str(exc)) from exc
    check_labels(model.spec.model, ex.labels)
    ex = replace(ex, key=inside.astype(np.int64), ts=times[inside])
    kept, _ = _newest([ex], model.spec.training.schedule.max_rows)
    return kept


@dataclass
class RetrainResult:
    version: str | None
    reason: str
    rows: int = 0
    offsets: dict[str, list[int]] = field(default_factory=dict)


def _newest(parts: list[Examples], max_rows: int) -> tuple[Examples, int]:
    """One `Examples` of the newest `max_rows` rows (by label time) and how many went."""
    rows = Examples.concat(parts)
    if len(rows) <= max_rows:
        return rows, 0
    order = np.argsort(rows.ts, kind="stable")[-max_rows:]
    return rows.take(np.sort(order)), len(rows) - max_rows


def read_history(
    conn: KafkaConnection,
    topic: str,
    decoder: LabeledDecoder,
    since: float,
    max_rows: int,
    group: str,
    timeout: float = 120.0,
    batch: int = 4096,
) -> History:
    """The labeled records of `topic` stamped at or after `since` (seconds), to the end."""
    from confluent_kafka import TopicPartition

    ends = end_offsets(conn, topic, timeout)
    since_ms = int(since * 1000)
    consumer = make_consumer(conn, group)  # assigned, never subscribed: no group state
    parts: list[Examples] = []
    held = read = dropped = dead = 0
    try:
        wanted = [TopicPartition(topic, p, since_ms) for p in sorted(ends)]
        found = consumer.offsets_for_times(wanted, timeout=timeout)
        # -1: no record at or after `since` in that partition; nothing to read there.
        starts = {
            tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found
        }
        todo = {p: ends[p] for p in ends if starts[p] < ends[p]}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {topic} to its end timed out (partitions {sorted(todo)})"
                )
            msgs = []
            for msg in consumer.consume(batch, 0.5):
                if msg.error() is not None:
                    continue
                p, offset = msg.partition(), msg.offset()
                if p not in todo or offset >= todo[p]:
                    continue  # written after the run started: the next run's
                if offset == todo[p] - 1:
                    del todo[p]
                read += 1
                if msg.timestamp()[1] >= since_ms:
                    msgs.append(msg)
            # A partition may end in records a reader is never handed (a transaction's
            # markers): its position says it is done.
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
            if not msgs:
                continue
            decoded = decoder.decode(msgs)
            dead += decoded.dead
            parts.append(decoded.examples)
            held += len(decoded.examples)
            if held >= 2 * max_rows:  # bounded: at most twice the cap, then the newest kept
                kept, gone = _newest(parts, max_rows)
                parts, held, dropped = [kept], len(kept), dropped + gone
    finally:
        consumer.close()
    if not parts:
        empty = Examples.empty(len(decoder.layout.numeric), len(decoder.layout.categorical))
        return History(empty, ends, since, read, dropped, dead)
    rows, gone = _newest(parts, max_rows)
    return History(rows, ends, since, read, dropped + gone, dead)


def last_scheduled(versions: ModelVersions) -> Any:
    found = versions.model.find_versions({TAG_TRAINING: SCHEDULED})
    return found[-1] if found else None


def retrain(
    settings: TrainerSettings, now: float | None = None, feast: FeastHistory | None = None
) -> RetrainResult:
    """One scheduled retrain (from `feast` when given); see the module's docstring."""
    model = settings.model
    spec = model.spec
    schedule = spec.training.schedule
    topic = model.topics.labeled
    versions = ModelVersions(settings.connections.mlflow_tracking_uri, spec.model.registry.name)
    options = LearnerOptions.from_spec(
        spec.model,
        spec.training,
        spec.drift,
        **{**settings.learner_settings(), "detect_concept": False},
    )
    if spec.model.strategy == "adapter":  # a fresh adapter on the frozen import
        base = baseline(versions, spec)
        if base is None:
            return RetrainResult(None, "strategy adapter: no version is aliased 'baseline'")
        learner: OnlineLearner = AdapterLearner(spec.model, spec.features, options, base)
    else:
        learner = OnlineLearner(spec.model, spec.features, options)
    decoder = LabeledDecoder(
        learner.layout,
        learner.encoder,
        model.name,
        spec.model.task,
        spec.model.classes,
        DeadLetters(None, None),  # counted and logged: the joiner's records are not ours to move
        spec.training.exploration.max_weight if spec.training.exploration else None,
    )
    since = (time.time() if now is None else now) - schedule.history_seconds
    source: dict[str, str] = {}
    if feast is None:
        history = read_history(
            settings.connections.kafka,
            topic,
            decoder,
            since,
            schedule.max_rows,
            f"{TRAINER.group_id(model.name)}-retrain",
            timeout=settings.history_timeout,
        )
        examples = history.examples
        rows = len(examples)
        log.info(
            "history of %s since %.0f: %d records read, %d rows kept, %d older dropped, %d bad",
            topic, since, history.read, rows, history.dropped, history.dead,
        )  # fmt: skip
        if rows == 0:
            return RetrainResult(
                None, f"no labeled rows in the last {schedule.history_seconds:.0f}s"
            )
        offsets = history.offsets(topic)
        ends: dict[str, Any] = {str(p): e for p, e in sorted(history.ends.items())}
        key = publish_key(model.name, offsets, 0)
    else:
        examples = read_feast_history(settings, feast, learner, since)
        rows = len(examples)
        log.info("%s joined with Feast since %.0f: %d rows", feast.entities, since, rows)
        if rows == 0:
            return RetrainResult(
                None,
                f"no entity rows of {feast.entities.name} in the last "
                f"{schedule.history_seconds:.0f}s",
            )
        name = f"feast:{feast.entities.name}"
        offsets = {name: [int(examples.key.min()), int(examples.key.max())]}
        ends = {name: data_fingerprint(examples)[:32]}  # the same rows: nothing new
        key = hashlib.sha256(
            json.dumps({"model": model.name, "rows": ends}, sort_keys=True).encode()
        ).hexdigest()[:32]
        source = {TAG_HISTORY_SOURCE: name}
    previous = last_scheduled(versions)
    if previous is not None and previous.tags.get(TAG_HISTORY_ENDS) == json.dumps(ends):
        return RetrainResult(
            None,
            f"no new rows since version {previous.version} "
            f"(same {'partition ends' if feast is None else 'rows'} {ends})",
            rows,
            offsets,
        )
    learner.observe(examples)  # held-out slice, anchor set, recent rows
    learner.retrain_on(examples, settings.retrain_passes)
    publisher = Publisher(settings, model, versions)
    decision = publisher.gate(learner)
    if decision is None:
        held = len(learner.gate_rows()[0])
        return RetrainResult(
            None,
            f"{held} held-out rows are fewer than the gate needs ({settings.gate_min_holdout})",
            rows,
            offsets,
        )
    champion = versions.by_alias(artifacts.ALIAS_CHAMPION)
    parent = champion.version if champion else None
    if not decision.publish:
        versions.record_rejection(
            {artifacts.TAG_GATE: decision.to_json(), artifacts.TAG_PARENT_VERSION: parent or "",
             TAG_TRAINING: SCHEDULED},
            decision.metrics(),
        )  # fmt: skip
        return RetrainResult(None, f"not published: {decision.reason}", rows, offsets)
    staged = publisher.build(
        learner,
        decision.to_json(),
        decision.metrics(),
        offsets,
        parent,
        [artifacts.ALIAS_CANDIDATE],
        key=key,
    )
    staged.tags.update(
        {
            TAG_TRAINING: SCHEDULED,
            TAG_HISTORY_ENDS: json.dumps(ends),
            TAG_HISTORY_SINCE: f"{since:.3f}",
            TAG_ROWS: str(rows),
            **source,
        }
    )
    version = versions.register(
        staged.key, staged.artifacts, staged.tags, staged.aliases, staged.metrics
    )
    log.info("registered %s version %s as candidate (%d rows)", versions.name, version, rows)
    return RetrainResult(version, f"published: {decision.reason}", rows, offsets)
