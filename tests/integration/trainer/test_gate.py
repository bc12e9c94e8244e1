"""The gate blocks forgetting, and a concept change still gets an improved version out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from driftline.api import artifacts
from driftline.common.streams import SEAStream
from driftline.trainer.bootstrap import bootstrap
from driftline.trainer.versions import ModelVersions
from driftline.trainer.worker import TrainerWorker

pytestmark = pytest.mark.integration


def inverted(rows: Any) -> Any:
    """The same inputs under the opposite rule: a concept change."""
    rows.labels[:] = 1.0 - rows.labels
    return rows


def test_regression_is_blocked_then_concept_epoch_publishes(
    trainer_case: Callable[..., Any], run_worker: Any, until: Any
) -> None:
    stream = SEAStream(seed=2)
    case = trainer_case(
        stream,
        training={"publish": {"everySamples": 1500, "everySeconds": 300}},
        detect_concept=False,  # only the drift event may say "concept" here
    )
    boot = stream.take(4000)
    bootstrap(case.settings, boot.features(), boot.labels.astype(np.float32))
    versions = ModelVersions(case.settings.connections.mlflow_tracking_uri, case.name)

    # The rule flips, but nobody says so: learning it forgets epoch 0's anchor set.
    first_flipped = time.time()
    case.produce(inverted(stream.take(3000)))
    worker = TrainerWorker(case.settings)
    with run_worker(worker):
        until(lambda: len(worker.progress.gate_history) >= 1, what="a gate decision")
        decision = worker.progress.gate_history[0]
        assert decision["publish"] is False
        assert "regresses the anchor set of epoch 0" in decision["reason"]
        assert versions.by_alias(artifacts.ALIAS_CANDIDATE) is None

        # The drift monitor says it is a concept change: a new epoch, and a version.
        case.drift("concept", window_start=first_flipped)
        until(lambda: worker.learner is not None and worker.learner.epoch == 1, what="epoch 1")
        case.produce(inverted(stream.take(2500)))
        candidate = until(lambda: versions.by_alias(artifacts.ALIAS_CANDIDATE), what="a candidate")

    assert candidate.tags[artifacts.TAG_CONCEPT_EPOCH] == "1"
    gate = json.loads(candidate.tags[artifacts.TAG_GATE])
    assert gate["publish"] is True and gate["epoch"] == 1
    assert gate["new"]["holdout"] > 0.9 > gate["serving"]["holdout"]

    # The rejected attempt is on record in MLflow too, with its reason.
    client = MlflowClient(case.settings.connections.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(f"driftline-{case.name}")
    rejected = client.search_runs(
        [experiment.experiment_id], "tags.`driftline.published` = 'false'"
    )
    assert rejected
    reason = json.loads(rejected[0].data.tags[artifacts.TAG_GATE])["reason"]
    assert "anchor set" in reason


def test_without_retrain_a_concept_event_opens_no_epoch(
    trainer_case: Callable[..., Any], run_worker: Any, until: Any
) -> None:
    """`drift.onDrift` without `retrain`: the event is read and counted, the learner keeps
    learning online in epoch 0 (no reset, no catch-up), also with the trainer's own
    concept check left on in its settings."""
    stream = SEAStream(seed=4)
    case = trainer_case(stream, drift={"onDrift": ["alert"]}, detect_concept=True)
    boot = stream.take(4000)
    bootstrap(case.settings, boot.features(), boot.labels.astype(np.float32))
    first_flipped = time.time()
    case.produce(inverted(stream.take(3000)))
    worker = TrainerWorker(case.settings)
    with run_worker(worker):
        until(lambda: worker.learner is not None and worker.learner.seq >= 3000, what="3000 rows")
        case.drift("concept", window_start=first_flipped)
        until(lambda: len(worker.progress.seen_events) == 1, what="the drift event read")
        seen = worker.learner.seq
        case.produce(inverted(stream.take(1000)))
        until(lambda: worker.learner.seq >= seen + 1000, what="1000 more rows learned")
        assert worker.learner.epoch == 0
        assert worker.learner.options.detect_concept is False
