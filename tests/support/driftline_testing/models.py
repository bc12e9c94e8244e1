"""Small ONNX models that follow the artifact contract, and registering them in MLflow.

For tests, benchmarks and local experiments: `mlp_model` builds an MLP with
`onnx.helper` alone (no torch), with the inputs and outputs of
`driftline.api.artifacts` and a stand-in for the trainer's preprocessing of
categorical features (a vocabulary lookup inside the graph). `register_version`
logs it as a run artifact and registers a version with its sha256 tag, the way
the trainer publishes one.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from driftline.api.artifacts import (
    INPUT_CATEGORICAL,
    INPUT_NUMERIC,
    MODEL_ARTIFACT,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITIES,
    OUTPUT_VALUE,
    TAG_SHA256,
)
from driftline.inference.contract import FeatureContract

VOCABULARY = ("a", "b", "c", "web", "app", "pos")
"""Categories the test graphs know; others encode as 0 (out of vocabulary)."""


def mlp_model(
    contract: FeatureContract,
    hidden: Sequence[int] = (32, 16),
    *,
    seed: int = 0,
    output_bias: Sequence[float] | None = None,
) -> bytes:
    """A serialized ONNX MLP for `contract`; `output_bias` shifts the final layer
    (a large bias on one class makes a version that always answers that class)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []
    inputs: list[Any] = []
    features: list[str] = []
    if contract.numeric:
        inputs.append(
            helper.make_tensor_value_info(INPUT_NUMERIC, TensorProto.FLOAT, ["N", contract.k])
        )
        features.append(INPUT_NUMERIC)
    if contract.categorical:
        m = len(contract.categorical)
        inputs.append(
            helper.make_tensor_value_info(INPUT_CATEGORICAL, TensorProto.STRING, ["N", m])
        )
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [INPUT_CATEGORICAL],
                ["categorical_codes"],
                domain="ai.onnx.ml",
                keys_strings=list(VOCABULARY),
                values_floats=[float(i + 1) for i in range(len(VOCABULARY))],
                default_float=0.0,
            )
        )
        features.append("categorical_codes")
    if len(features) == 2:
        nodes.append(helper.make_node("Concat", features, ["x"], axis=1))
        previous = "x"
    else:
        previous = features[0]
    width = contract.k + len(contract.categorical)
    for i, size in enumerate(hidden):
        weight = rng.standard_normal((width, size)).astype(np.float32) / np.sqrt(width)
        inits += [
            numpy_helper.from_array(weight, f"w{i}"),
            numpy_helper.from_array(np.zeros(size, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"h{i}"]),
            helper.make_node("Relu", [f"h{i}"], [f"r{i}"]),
        ]
        previous, width = f"r{i}", size
    classification = contract.task == "classification"
    out = contract.classes if classification else 1
    weight = rng.standard_normal((width, out)).astype(np.float32) / np.sqrt(width)
    bias = np.asarray(output_bias if output_bias is not None else np.zeros(out), np.float32)
    inits += [numpy_helper.from_array(weight, "wo"), numpy_helper.from_array(bias, "bo")]
    nodes.append(helper.make_node("Gemm", [previous, "wo", "bo"], ["logits"]))
    if classification:
        nodes += [
            helper.make_node("Softmax", ["logits"], [OUTPUT_PROBABILITIES], axis=1),
            helper.make_node("ArgMax", [OUTPUT_PROBABILITIES], [OUTPUT_LABEL], axis=1, keepdims=0),
        ]
        outputs = [
            helper.make_tensor_value_info(OUTPUT_LABEL, TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info(OUTPUT_PROBABILITIES, TensorProto.FLOAT, ["N", out]),
        ]
    else:
        inits.append(numpy_helper.from_array(np.asarray([-1], np.int64), "flat"))
        nodes.append(helper.make_node("Reshape", ["logits", "flat"], [OUTPUT_VALUE]))
        outputs = [helper.make_tensor_value_info(OUTPUT_VALUE, TensorProto.FLOAT, ["N"])]
    graph = helper.make_graph(nodes, "driftline-test-mlp", inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def register_version(
    tracking_uri: str,
    name: str,
    model: bytes,
    *,
    aliases: Sequence[str] = (),
    sha256: str | None = None,
    tags: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
) -> str:
    """Log `model` as a run's `model/model.onnx`, register a version, set aliases.

    `sha256` overrides the recorded hash (to test that a mismatch is refused); `files`
    are more artifacts of the run (artifact name -> bytes), a signature for one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(MODEL_ARTIFACT).name
        path.write_bytes(model)
        client.log_artifact(run.info.run_id, str(path), str(Path(MODEL_ARTIFACT).parent))
        for artifact, data in (files or {}).items():
            extra = Path(tmp) / "files" / artifact
            extra.parent.mkdir(parents=True, exist_ok=True)
            extra.write_bytes(data)
            client.log_artifact(run.info.run_id, str(extra), str(Path(artifact).parent))
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(MlflowException):  # registered already
        client.create_registered_model(name)
    digest = sha256 or hashlib.sha256(model).hexdigest()
    version = client.create_model_version(
        name,
        source=f"runs:/{run.info.run_id}/{Path(MODEL_ARTIFACT).parent}",
        run_id=run.info.run_id,
        tags={TAG_SHA256: digest, **(tags or {})},
    )
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def model_document(
    name: str,
    *,
    tracking_uri: str = "http://127.0.0.1:5000",
    kafka: str = "127.0.0.1:9092",
    redis: str = "redis://127.0.0.1:6379/0",
    numeric: Sequence[str] = ("x1", "x2", "x3"),
    categorical: Sequence[str] = (),
    task: str = "classification",
    classes: int = 2,
    namespace: str = "test",
    inference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A DynamicModel document (as YAML would hold it) for tests and benchmarks."""
    features: list[dict[str, Any]] = [{"name": n, "type": "numeric"} for n in numeric]
    features += [{"name": c, "type": "categorical", "hashBuckets": 16} for c in categorical]
    spec: dict[str, Any] = {
        "model": {
            "registry": {"trackingUri": tracking_uri, "name": name},
            "task": task,
            **({"classes": classes} if task == "classification" else {}),
        },
        "features": features,
        "kafka": {"bootstrapServers": kafka, "partitions": 1},
        "redis": {"url": redis},
    }
    if inference is not None:
        spec["inference"] = inference
    return {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def write_model_file(path: str | Path, document: dict[str, Any]) -> Path:
    import yaml

    target = Path(path)
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return target
