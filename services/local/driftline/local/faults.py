"""Bad candidates on purpose: what a broken trainer would publish.

The demo and the reliability tests need a candidate that is wrong in a known way,
registered exactly as the trainer registers versions (artifact, sha256 tag,
`candidate` alias), so that everything downstream treats it as real.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from driftline.api.registry import (
    ALIAS_CANDIDATE,
    ALIAS_CHAMPION,
    MODEL_ARTIFACT,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITIES,
    TAG_PARENT_VERSION,
    TAG_SHA256,
)


def inverted(onnx_bytes: bytes) -> bytes:
    """The same classifier with its class scores reversed: it predicts the other class."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    renamed = {OUTPUT_LABEL: "_original_label", OUTPUT_PROBABILITIES: "_original_probabilities"}
    for node in graph.node:  # the original graph now computes the renamed tensors
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    big = 2**62
    graph.initializer.extend(
        [
            helper.make_tensor("_rev_starts", onnx.TensorProto.INT64, [1], [-1]),
            helper.make_tensor("_rev_ends", onnx.TensorProto.INT64, [1], [-big]),
            helper.make_tensor("_rev_axes", onnx.TensorProto.INT64, [1], [1]),
            helper.make_tensor("_rev_steps", onnx.TensorProto.INT64, [1], [-1]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Slice",
                ["_original_probabilities", "_rev_starts", "_rev_ends", "_rev_axes", "_rev_steps"],
                [OUTPUT_PROBABILITIES],
                name="driftline_fault_reverse",
            ),
            helper.make_node(
                "ArgMax",
                [OUTPUT_PROBABILITIES],
                [OUTPUT_LABEL],
                axis=1,
                keepdims=0,
                name="driftline_fault_argmax",
            ),
        ]
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def register_inverted_candidate(tracking_uri: str, model_name: str) -> str:
    """Register the champion, inverted, as a new version under the `candidate` alias."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    champion = client.get_model_version_by_alias(model_name, ALIAS_CHAMPION)
    run_id = str(champion.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, MODEL_ARTIFACT, tmp)
        data = inverted(Path(local).read_bytes())
        experiment = client.get_run(run_id).info.experiment_id
        run = client.create_run(experiment, run_name="fault-inverted-candidate")
        out = Path(tmp) / "out" / "model.onnx"
        out.parent.mkdir()
        out.write_bytes(data)
        client.log_artifact(
            run.info.run_id, str(out), artifact_path=str(Path(MODEL_ARTIFACT).parent)
        )
        client.set_terminated(run.info.run_id)
    tags: dict[str, Any] = {
        TAG_SHA256: hashlib.sha256(data).hexdigest(),
        TAG_PARENT_VERSION: champion.version,
        "driftline.fault": "inverted class scores",
    }
    version = client.create_model_version(
        model_name,
        source=f"runs:/{run.info.run_id}/{Path(MODEL_ARTIFACT).parent}",
        run_id=run.info.run_id,
        tags=tags,
    )
    client.set_registered_model_alias(model_name, ALIAS_CANDIDATE, version.version)
    return str(version.version)
