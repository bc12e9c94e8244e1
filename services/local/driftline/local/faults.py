"""Bad candidates on purpose: what a broken trainer would publish.

The demo and the reliability tests need a candidate that is wrong in a known way,
registered exactly as the trainer registers versions (artifact, sha256 tag,
`candidate` alias), so that everything downstream treats it as real. Each fault
rewrites a working graph, so the broken version passes every check at load time
(inputs, outputs, shapes, a warm-up run) and only shows its fault while serving:

- `inverted`: class scores reversed (wrong answers; the quality check catches it);
- `nan_answers`: NaN in every float output (no answer at all);
- `fails_at_run_time`: a reshape that only fits the warm-up batch (ONNX Runtime
  raises on the batch sizes traffic brings);
- `slowed`: the same answers after a chain of large matrix products (latency).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from driftline.api.artifacts import (
    ALIAS_CANDIDATE,
    ALIAS_CHAMPION,
    INPUT_NUMERIC,
    MODEL_ARTIFACT,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITIES,
    TAG_PARENT_VERSION,
    TAG_SHA256,
)
from driftline.common.registry import RegisteredModel, RegistryError


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


def _float_outputs(graph: Any) -> list[str]:
    import onnx

    return [o.name for o in graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]


def _rename_outputs(graph: Any, names: list[str]) -> dict[str, str]:
    """Make the graph compute `names` under new names, so new nodes can produce them."""
    renamed = {name: f"_original_{name}" for name in names}
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    return renamed


def _finish(model: Any) -> bytes:
    import onnx

    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def nan_answers(onnx_bytes: bytes) -> bytes:
    """The same graph with NaN in every float output (probabilities, value)."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    outputs = _float_outputs(graph)
    renamed = _rename_outputs(graph, outputs)
    graph.initializer.append(
        helper.make_tensor("_fault_nan", onnx.TensorProto.FLOAT, [], [math.nan])
    )
    for name in outputs:
        graph.node.append(
            helper.make_node("Mul", [renamed[name], "_fault_nan"], [name], name=f"_fault_{name}")
        )
    return _finish(model)


def fails_at_run_time(onnx_bytes: bytes, warm_rows: int) -> bytes:
    """A graph that runs on a batch of `warm_rows` rows (the loader's warm-up) and
    raises on batches whose outputs do not split into `warm_rows` rows, one row above all."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    outputs = _float_outputs(graph)
    renamed = _rename_outputs(graph, outputs)
    graph.initializer.append(
        helper.make_tensor("_fault_rows", onnx.TensorProto.INT64, [2], [warm_rows, -1])
    )
    for name in outputs:
        graph.node.extend(
            [
                helper.make_node("Shape", [renamed[name]], [f"_fault_shape_{name}"]),
                helper.make_node("Reshape", [renamed[name], "_fault_rows"], [f"_fault_{name}"]),
                helper.make_node("Reshape", [f"_fault_{name}", f"_fault_shape_{name}"], [name]),
            ]
        )
    return _finish(model)


def slowed(onnx_bytes: bytes, matmuls: int = 40, size: int = 256) -> bytes:
    """The same answers after `matmuls` products of two size x size matrices per run.

    The matrices depend on the input (so nothing can be folded at load time) and are
    the identity (so nothing overflows); the result is added to the outputs times zero.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    if INPUT_NUMERIC not in {i.name for i in graph.input}:
        raise ValueError(f"slowed() needs a model with the {INPUT_NUMERIC!r} input")
    outputs = _float_outputs(graph)
    renamed = _rename_outputs(graph, outputs)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.eye(size, dtype=np.float32), "_fault_eye"),
            numpy_helper.from_array(np.zeros((), np.float32), "_fault_zero"),
        ]
    )
    nodes = [
        helper.make_node("ReduceSum", [INPUT_NUMERIC], ["_fault_sum"], keepdims=0),
        helper.make_node("Mul", ["_fault_sum", "_fault_zero"], ["_fault_nothing"]),
        helper.make_node("Add", ["_fault_eye", "_fault_nothing"], ["_fault_m0"]),
    ]
    for i in range(matmuls):
        nodes.append(
            helper.make_node("MatMul", [f"_fault_m{i}", "_fault_m0"], [f"_fault_m{i + 1}"])
        )
    nodes += [
        helper.make_node("ReduceSum", [f"_fault_m{matmuls}"], ["_fault_total"], keepdims=0),
        helper.make_node("Mul", ["_fault_total", "_fault_zero"], ["_fault_added"]),
    ]
    nodes += [helper.make_node("Add", [renamed[n], "_fault_added"], [n]) for n in outputs]
    graph.node.extend(nodes)
    return _finish(model)


def champion_model(tracking_uri: str, model_name: str) -> bytes:
    """The ONNX bytes of the version the `champion` alias names."""
    registry = RegisteredModel(tracking_uri, model_name)
    champion = registry.version_for_alias(ALIAS_CHAMPION)
    if champion is None:
        raise RegistryError(f"{model_name!r} has no {ALIAS_CHAMPION!r} version")
    return registry.read_artifact(champion, MODEL_ARTIFACT, verify=False)


def register_candidate(
    tracking_uri: str, model_name: str, data: bytes, fault: str, sha256: str | None = None
) -> str:
    """Register `data` as a new version under the `candidate` alias, as the trainer does.

    `fault` is recorded in the version's tags; `sha256` replaces the true hash (a
    version whose artifact does not match its tag)."""
    registry = RegisteredModel(tracking_uri, model_name)
    champion = registry.version_for_alias(ALIAS_CHAMPION)
    if champion is None or champion.run_id is None:
        raise RegistryError(f"{model_name!r} has no {ALIAS_CHAMPION!r} version with a run")
    run = registry.log_run(
        registry.run_experiment(champion.run_id),
        f"fault-{fault.replace(' ', '-')}",
        files={MODEL_ARTIFACT: data},
    )
    tags = {
        TAG_SHA256: sha256 or hashlib.sha256(data).hexdigest(),
        TAG_PARENT_VERSION: champion.version,
        "driftline.fault": fault,
    }
    source = f"runs:/{run.run_id}/{Path(MODEL_ARTIFACT).parent}"
    version = registry.create_version(source, run.run_id, tags)
    registry.set_alias(ALIAS_CANDIDATE, version.version)
    return version.version


def register_inverted_candidate(tracking_uri: str, model_name: str) -> str:
    """Register the champion, inverted, as a new version under the `candidate` alias."""
    data = inverted(champion_model(tracking_uri, model_name))
    return register_candidate(tracking_uri, model_name, data, "inverted class scores")
