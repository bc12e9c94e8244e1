"""A labeled stream on a real broker becomes registered versions with their lineage."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from driftline.api import artifacts
from driftline.common.kafka import make_consumer
from driftline.common.streams import CovariateShiftStream
from driftline.trainer import export
from driftline.trainer.bootstrap import bootstrap
from driftline.trainer.checkpoint import from_bytes, restore_learner
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.versions import STATE_ARTIFACT, ModelVersions, sha256
from driftline.trainer.worker import TrainerWorker

pytestmark = pytest.mark.integration

PLUGIN = """
import torch
from torch import nn

class Gated(nn.Module):
    def __init__(self, width, outputs):
        super().__init__()
        self.h = nn.Linear(width, 16)
        self.g = nn.Linear(width, 16)
        self.out = nn.Linear(16, outputs)

    def forward(self, x):
        return self.out(torch.relu(self.h(x)) * torch.sigmoid(self.g(x)))

def build(ctx):
    return Gated(ctx.input_width, ctx.outputs)
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"gated_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{name}:build"
    sys.modules.pop(name, None)


def dead_letters(case: Any, expected: int) -> list[tuple[bytes, str]]:
    consumer = make_consumer(case.conn, f"{case.name}-dlq-reader", [case.topics.dead_letter])
    found: list[tuple[bytes, str]] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(50, 0.5):
                if msg.error() is None:
                    headers = dict(msg.headers() or [])
                    found.append((msg.value(), headers["driftline-error"].decode()))
    finally:
        consumer.close()
    return found


@pytest.mark.parametrize("learner", ["mlp", "plugin"])
def test_stream_becomes_versions_with_lineage(
    learner: str, plugin: str, trainer_case: Callable[..., Any], run_worker: Any, until: Any
) -> None:
    stream = CovariateShiftStream(seed=1, schedule=[(0, 0), (3000, 1)])
    spec = {"type": "plugin", "entrypoint": plugin} if learner == "plugin" else None
    quantization = {"quantization": {"mode": "int8", "maxAccuracyDrop": 0.02}}
    case = trainer_case(stream, learner=spec, inference=quantization if learner == "mlp" else None)
    boot = stream.take(3000)
    assert bootstrap(case.settings, boot.features(), boot.labels.astype(np.float32)) == "1"
    versions = ModelVersions(case.settings.connections.mlflow_tracking_uri, case.name)
    for alias in (artifacts.ALIAS_CHAMPION, artifacts.ALIAS_BASELINE):
        info = versions.by_alias(alias)
        assert info is not None and info.version == "1"

    case.produce_raw(
        [
            b"not json",
            json.dumps({"v": 1, "request_id": "x"}).encode(),
            b"",
        ]
    )
    rows = stream.take(4000)  # the new segment: the champion has never seen it
    case.produce(rows)
    worker = TrainerWorker(case.settings)
    with run_worker(worker):
        candidate = until(lambda: versions.by_alias(artifacts.ALIAS_CANDIDATE), what="a candidate")
    assert candidate.version == "2"
    tags = candidate.tags
    assert tags[artifacts.TAG_PARENT_VERSION] == "1"
    assert tags[artifacts.TAG_CONCEPT_EPOCH] == "0"
    assert int(tags[artifacts.TAG_EXAMPLES_SEEN]) >= 3000 + 2000
    if learner == "mlp":  # the int8 export is checked and kept or refused, with both scores
        decision = json.loads(tags[artifacts.TAG_INT8])
        assert decision["decision"] in ("kept", "refused") and decision["maxAccuracyDrop"] == 0.02
        assert set(decision["fp32"]) == set(decision["int8"]) == {"holdout", "anchor"}
        if decision["decision"] == "kept":  # beside the fp32 graph, with its own sha256
            int8 = versions.download(candidate, artifacts.INT8_ARTIFACT)
            assert sha256(int8) == tags[artifacts.TAG_INT8_SHA256]
        else:
            assert artifacts.TAG_INT8_SHA256 not in tags
    else:
        assert artifacts.TAG_INT8 not in tags and artifacts.TAG_INT8_SHA256 not in tags
    gate = json.loads(tags[artifacts.TAG_GATE])
    assert gate["publish"] is True and gate["serving_version"] == "1"
    assert gate["new"]["holdout"] > gate["serving"]["holdout"]
    offsets = json.loads(tags[artifacts.TAG_OFFSETS])
    assert {k.rsplit(":", 1)[0] for k in offsets} == {case.topics.labeled}
    assert sum(last - first + 1 for first, last in offsets.values()) >= 2000

    # The artifact is the one the sha256 tag names, and ONNX Runtime equals torch on it.
    graph = versions.download(candidate, artifacts.MODEL_ARTIFACT)
    assert sha256(graph) == tags[artifacts.TAG_SHA256]
    spec_model = case.settings.model.spec
    restored = OnlineLearner(
        spec_model.model,
        spec_model.features,
        LearnerOptions.from_spec(spec_model.model, spec_model.training),
    )
    restore_learner(restored, *from_bytes(versions.download(candidate, STATE_ARTIFACT)))
    probe = restored.examples(
        rows.numeric.astype(np.float32),
        rows.categorical.astype(object),
        rows.labels,
        np.arange(len(rows)),
    )
    torch_out = restored.predict(probe.numeric, probe.codes)
    assert export.parity(graph, torch_out, probe, restored.layout, "classification") <= 1e-5
    reference = versions.download(candidate, artifacts.REFERENCE_ARTIFACT)
    with np.load(io.BytesIO(reference), allow_pickle=False) as npz:
        assert set(npz.files) == {"x1", "x2", "x3", "x4", "segment", artifacts.REFERENCE_OUTPUT_KEY}

    # Bad records went to the dead letters with their reason; nothing stopped the stream.
    dead = dead_letters(case, 3)
    assert len(dead) == 3
    reasons = " | ".join(reason for _, reason in dead)
    assert "not JSON" in reasons and "empty record" in reasons and "LabeledExample" in reasons

    # After a clean stop, the group's committed offsets are the checkpoint's positions.
    meta = from_bytes(case.settings.checkpoint_dir.joinpath("checkpoint.npz").read_bytes())[1]
    positions = meta["worker"]["positions"]
    assert sum(v for k, v in positions.items() if k.startswith(case.topics.labeled)) == 4003
    client = MlflowClient(case.settings.connections.mlflow_tracking_uri)
    run = client.get_run(candidate.run_id)
    assert run.data.metrics["parity_max_abs_diff"] <= 1e-5
