"""The int8 gate: an int8 graph ships beside the fp32 one only within its tolerance."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml

from driftline.api import artifacts, parse_dynamic_model
from driftline.api.resource import DynamicModel
from driftline.common.model_signature import SignatureCheck
from driftline.common.streams import AgrawalStream, SEAStream
from driftline.trainer import export, int8_gate
from driftline.trainer.examples import Examples
from driftline.trainer.learner import OnlineLearner
from driftline.trainer.publish import Publisher
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import Artifacts, ModelVersions
from driftline_testing.signing_keys import key_pair

LearnerFactory = Callable[..., OnlineLearner]


def test_decide_keeps_within_the_tolerance_and_refuses_beyond() -> None:
    rows = {"holdout": 300, "anchor": 200}
    kept = int8_gate.decide(
        {"holdout": 0.9, "anchor": 0.8}, {"holdout": 0.89, "anchor": 0.8}, rows, 0.01
    )
    assert kept.keep and kept.outcome == "kept"
    refused = int8_gate.decide(
        {"holdout": 0.9, "anchor": 0.8}, {"holdout": 0.9, "anchor": 0.78}, rows, 0.01
    )
    assert not refused.keep and refused.reason.startswith("anchor score 0.7800 (int8)")
    assert not int8_gate.decide({"holdout": 0.9}, {"holdout": float("nan")}, rows, 0.5).keep
    skipped = int8_gate.decide({}, {}, {}, 0.01)
    assert skipped.outcome == "skipped" and not skipped.keep
    tag = json.loads(refused.tag())
    assert tag["decision"] == "refused" and tag["maxAccuracyDrop"] == 0.01
    assert tag["fp32"] == {"holdout": 0.9, "anchor": 0.8} and tag["rows"] == rows
    assert refused.metrics()["int8_anchor_score"] == pytest.approx(0.78)


def dynamic_model(stream: Any, tmp_path: Path, quantization: dict[str, Any] | None) -> Path:
    doc = {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": "int8"},
        "spec": {
            "model": {
                "registry": {"trackingUri": "http://127.0.0.1:1", "name": "int8"},
                "learner": {"type": "mlp", "hidden": [32, 16]},
            },
            "features": [
                f.model_dump(by_alias=True, exclude_none=True, mode="json")
                for f in stream.contract()
            ],
            "kafka": {"bootstrapServers": "127.0.0.1:1"},
            "redis": {"url": "redis://127.0.0.1:1/0"},
            **({"inference": {"quantization": quantization}} if quantization else {}),
        },
    }
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def publisher(model_file: Path, tmp_path: Path) -> tuple[Publisher, DynamicModel]:
    settings = TrainerSettings(model_file=model_file, checkpoint_dir=tmp_path / "state")
    model = parse_dynamic_model(yaml.safe_load(model_file.read_text()))
    return Publisher(settings, model, versions=None), model  # type: ignore[arg-type]


def trained(
    stream: Any, make_learner: LearnerFactory, examples_of: Callable[..., Examples]
) -> OnlineLearner:
    learner = make_learner(stream)
    learner.fit_offline(examples_of(learner, stream.take(3000)), passes=2)
    learner.learn(examples_of(learner, stream.take(3000)))  # fills the held-out slice
    return learner


@pytest.mark.parametrize("stream_cls", [SEAStream, AgrawalStream], ids=["numeric", "categorical"])
def test_the_int8_graph_is_exported_and_kept_within_the_tolerance(
    stream_cls: Any,
    make_learner: LearnerFactory,
    examples_of: Callable[..., Examples],
    tmp_path: Path,
) -> None:
    stream = stream_cls(seed=5)
    learner = trained(stream, make_learner, examples_of)
    pub, _ = publisher(dynamic_model(stream, tmp_path, {"maxAccuracyDrop": 0.05}), tmp_path)
    staged = pub.build(learner, "{}", {}, {}, None, [])
    assert staged.artifacts.int8 is not None
    assert artifacts.INT8_ARTIFACT in staged.artifacts.files()
    decision = json.loads(staged.tags[artifacts.TAG_INT8])
    assert decision["decision"] == "kept" and decision["maxAccuracyDrop"] == 0.05
    assert decision["rows"]["holdout"] > 100
    for rows in ("holdout", "anchor"):
        assert abs(decision["fp32"][rows] - decision["int8"][rows]) <= 0.05
        assert f"int8_{rows}_score" in staged.metrics and f"fp32_{rows}_score" in staged.metrics
    # The int8 graph keeps the contract: same inputs and outputs, int8 weights inside.
    graph, small = export.session(staged.artifacts.model), export.session(staged.artifacts.int8)
    assert [i.name for i in small.get_inputs()] == [i.name for i in graph.get_inputs()]
    assert [o.name for o in small.get_outputs()] == [o.name for o in graph.get_outputs()]
    ops = {n.op_type for n in onnx.load_from_string(staged.artifacts.int8).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops


def test_an_int8_graph_beyond_the_tolerance_is_refused_with_both_scores(
    make_learner: LearnerFactory,
    examples_of: Callable[..., Examples],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = SEAStream(seed=6)
    learner = trained(stream, make_learner, examples_of)
    # A quantiser that loses the model: the graph of an untrained network.
    untrained = export.export_onnx(make_learner(stream).net, learner.layout, "classification", 2)
    monkeypatch.setattr(export, "quantize_int8", lambda graph: untrained)
    pub, _ = publisher(dynamic_model(stream, tmp_path, {"maxAccuracyDrop": 0.01}), tmp_path)
    staged = pub.build(learner, "{}", {}, {}, None, [])
    assert staged.artifacts.int8 is None
    assert artifacts.INT8_ARTIFACT not in staged.artifacts.files()
    decision = json.loads(staged.tags[artifacts.TAG_INT8])
    assert decision["decision"] == "refused" and "maxAccuracyDrop 0.01" in decision["reason"]
    assert decision["fp32"]["holdout"] - decision["int8"]["holdout"] > 0.01
    assert staged.metrics["int8_holdout_score"] < staged.metrics["fp32_holdout_score"]


def test_without_the_spec_field_no_int8_graph_is_made(
    make_learner: LearnerFactory,
    examples_of: Callable[..., Examples],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = SEAStream(seed=7)
    learner = trained(stream, make_learner, examples_of)

    def never(graph: bytes) -> bytes:
        raise AssertionError("quantised without being asked to")

    monkeypatch.setattr(export, "quantize_int8", never)
    pub, _ = publisher(dynamic_model(stream, tmp_path, None), tmp_path)
    staged = pub.build(learner, "{}", {}, {}, None, [])
    assert staged.artifacts.int8 is None and artifacts.TAG_INT8 not in staged.tags
    assert not any(k.startswith("int8_") for k in staged.metrics)
    np.testing.assert_equal(len(staged.artifacts.files()), 3)


def test_a_signing_key_signs_the_int8_graph_beside_the_fp32_one(tmp_path: Path) -> None:
    keys = key_pair(tmp_path)
    versions = ModelVersions("http://127.0.0.1:1", "int8", keys.private_key)
    files = Artifacts(model=b"fp32 graph", reference=None, state=None, int8=b"int8 graph")
    signed = versions._signed(files.files())
    check = SignatureCheck(keys.public_pem.encode(), certificate=False, required=True)
    pairs = [
        (artifacts.MODEL_ARTIFACT, artifacts.SIGNATURE_ARTIFACT),
        (artifacts.INT8_ARTIFACT, artifacts.INT8_SIGNATURE_ARTIFACT),
    ]
    for graph, signature in pairs:
        folder = tmp_path / Path(graph).stem
        folder.mkdir()
        (folder / Path(graph).name).write_bytes(signed[graph])
        (folder / "sig").write_bytes(signed[signature])
        assert check.verify(folder / Path(graph).name, folder / "sig")
