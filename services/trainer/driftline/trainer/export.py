"""Export a learned network to the ONNX artifact serving loads, and check it.

The graph's contract is `driftline.api.artifacts`: inputs `numeric` (float32
[N, k]) and `categorical` (string [N, m], absent when the contract has none);
outputs `label` (int64 [N]) and `probabilities` (float32 [N, C]), or `value`
(float32 [N]) for regression.

The network (preprocessing included) is exported by torch. The categorical texts
-> codes step cannot be traced from torch (it has no strings), so it is written
as ONNX nodes and spliced in front: per feature a `Gather` of its column, then
`com.microsoft.MurmurHash3` (unsigned, seed 0) and `Mod` for hashed features or
`ai.onnx.ml.LabelEncoder` for vocabularies, then `Concat` into the codes the
network takes. `driftline.common.feature_values.category_code` is the same rule in Python.

Every export is checked: ONNX Runtime's outputs must equal torch's within 1e-5
on real rows, or the version is not published.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from driftline.api import artifacts
from driftline.api.spec import DEFAULT_HASH_BUCKETS
from driftline.common.feature_values import HASH_SEED
from driftline.common.features import FeatureLayout
from driftline.trainer.examples import Examples
from driftline.trainer.nets import TabularNet

OPSET: Final = 17
ML_OPSET: Final = 2
CODES: Final = "driftline_codes"


class ExportError(RuntimeError):
    """An export that must not be published (failed check, broken graph)."""


class _Classifier(nn.Module):
    def __init__(self, net: TabularNet, numeric: bool, categorical: bool) -> None:
        super().__init__()
        self.net, self.numeric, self.categorical = net, numeric, categorical

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.net(*_split(inputs, self.numeric, self.categorical)), 1)
        return torch.argmax(probabilities, dim=1), probabilities


class _Regressor(nn.Module):
    def __init__(self, net: TabularNet, numeric: bool, categorical: bool) -> None:
        super().__init__()
        self.net, self.numeric, self.categorical = net, numeric, categorical

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(*_split(inputs, self.numeric, self.categorical))
        return out


def _split(
    inputs: tuple[torch.Tensor, ...], numeric: bool, categorical: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network always takes (numeric, codes); the graph only has the inputs that exist."""
    if numeric and categorical:
        return inputs[0], inputs[1]
    if numeric:
        x = inputs[0]
        return x, torch.zeros(x.shape[0], 0, dtype=torch.int64)
    c = inputs[0]
    return torch.zeros(c.shape[0], 0), c


def export_onnx(net: TabularNet, layout: FeatureLayout, task: str, classes: int) -> bytes:
    has_numeric, has_categorical = bool(layout.numeric), bool(layout.categorical)
    wrapper: nn.Module = (
        _Classifier(net, has_numeric, has_categorical)
        if task == "classification"
        else _Regressor(net, has_numeric, has_categorical)
    )
    names, example = [], []
    if has_numeric:
        names.append(artifacts.INPUT_NUMERIC)
        example.append(torch.zeros(2, len(layout.numeric)))
    if has_categorical:
        names.append(CODES)
        example.append(torch.zeros(2, len(layout.categorical), dtype=torch.int64))
    outputs = (
        [artifacts.OUTPUT_LABEL, artifacts.OUTPUT_PROBABILITIES]
        if task == "classification"
        else [artifacts.OUTPUT_VALUE]
    )
    net.eval()
    model = torch_to_onnx(wrapper, example, names, outputs, OPSET)
    if has_categorical:
        splice_categorical_front(model, layout)
    describe_graph(model, layout, task, classes)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {exc}") from exc
    return bytes(model.SerializeToString())


def torch_to_onnx(
    module: torch.nn.Module,
    example: Sequence[torch.Tensor],
    names: list[str],
    outputs: list[str],
    opset: int,
) -> onnx.ModelProto:
    """`module` exported with the TorchScript exporter, every axis 0 dynamic (`N`)."""
    with tempfile.TemporaryDirectory(prefix="driftline-export-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            module,
            tuple(example),
            path,
            dynamo=False,
            input_names=names,
            output_names=outputs,
            dynamic_axes={n: {0: "N"} for n in names + outputs},
            opset_version=opset,
        )
        return onnx.load_model(path)


def splice_categorical_front(model: onnx.ModelProto, layout: FeatureLayout) -> None:
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    inits = [numpy_helper.from_array(np.array([1], np.int64), "driftline_axis1")]
    columns = []
    for j, feature in enumerate(layout.categorical):
        col, code, out = f"driftline_cat{j}", f"driftline_code{j}", f"driftline_code{j}_2d"
        inits.append(numpy_helper.from_array(np.array(j, np.int64), f"driftline_index{j}"))
        nodes.append(
            helper.make_node(
                "Gather", [artifacts.INPUT_CATEGORICAL, f"driftline_index{j}"], [col], axis=1
            )
        )
        if feature.vocabulary is not None:
            nodes.append(
                helper.make_node(
                    "LabelEncoder",
                    [col],
                    [code],
                    domain="ai.onnx.ml",
                    keys_strings=list(feature.vocabulary),
                    values_int64s=list(range(len(feature.vocabulary))),
                    default_int64=len(feature.vocabulary),
                )
            )
        else:
            buckets = feature.hash_buckets or DEFAULT_HASH_BUCKETS
            inits.append(numpy_helper.from_array(np.array(buckets, np.int64), f"driftline_b{j}"))
            nodes += [
                helper.make_node(
                    "MurmurHash3",
                    [col],
                    [f"{col}_hash"],
                    domain="com.microsoft",
                    seed=HASH_SEED,
                    positive=1,
                ),
                helper.make_node("Cast", [f"{col}_hash"], [f"{col}_i64"], to=TensorProto.INT64),
                helper.make_node("Mod", [f"{col}_i64", f"driftline_b{j}"], [code]),
            ]
        nodes.append(helper.make_node("Unsqueeze", [code, "driftline_axis1"], [out]))
        columns.append(out)
    nodes.append(helper.make_node("Concat", columns, [CODES], axis=1))
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    graph.initializer.extend(inits)
    inputs = [i for i in graph.input if i.name != CODES]
    del graph.input[:]
    graph.input.extend(inputs)
    graph.input.append(
        helper.make_tensor_value_info(
            artifacts.INPUT_CATEGORICAL, TensorProto.STRING, ["N", len(layout.categorical)]
        )
    )
    model.opset_import.extend(
        [helper.make_opsetid("ai.onnx.ml", ML_OPSET), helper.make_opsetid("com.microsoft", 1)]
    )


def describe_graph(
    model: onnx.ModelProto,
    layout: FeatureLayout,
    task: str,
    classes: int,
    producer: str = "driftline-trainer",
) -> None:
    """Metadata a reader of the file can use without the DynamicModel at hand."""
    props = {
        "driftline.numeric": json.dumps(list(layout.numeric_names)),
        "driftline.categorical": json.dumps(list(layout.categorical_names)),
        "driftline.task": task,
        "driftline.classes": str(classes if task == "classification" else 0),
        "driftline.feature_contract": layout.contract_hash(),
    }
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = producer


# -- checks -----------------------------------------------------------------------------


def onnx_inputs(ex: Examples, layout: FeatureLayout) -> dict[str, NDArray[Any]]:
    feeds: dict[str, NDArray[Any]] = {}
    if layout.numeric:
        # The contract's columns: an adapter's rows carry its base's outputs after them.
        numeric = ex.numeric[:, : len(layout.numeric)]
        feeds[artifacts.INPUT_NUMERIC] = np.ascontiguousarray(numeric, dtype=np.float32)
    if layout.categorical:
        feeds[artifacts.INPUT_CATEGORICAL] = np.asarray(ex.categorical, dtype=object)
    return feeds


def session(model: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnx(sess: Any, ex: Examples, layout: FeatureLayout, task: str) -> NDArray[np.float32]:
    """Probabilities [n, C] or values [n] from an ONNX session."""
    name = artifacts.OUTPUT_PROBABILITIES if task == "classification" else artifacts.OUTPUT_VALUE
    (out,) = sess.run([name], onnx_inputs(ex, layout))
    return np.asarray(out, dtype=np.float32)


def parity(
    model: bytes, torch_outputs: NDArray[np.float32], ex: Examples, layout: FeatureLayout, task: str
) -> float:
    """Largest absolute difference between ONNX Runtime's and torch's outputs on `ex`."""
    if len(ex) == 0:
        raise ExportError("no rows to check the export against")
    got = run_onnx(session(model), ex, layout, task)
    if got.shape != torch_outputs.shape:
        raise ExportError(
            f"ONNX output shape {got.shape} differs from torch's {torch_outputs.shape}"
        )
    return float(np.max(np.abs(got - torch_outputs)))


def quantize_int8(model: bytes) -> bytes:
    """Dynamic int8 quantisation of the weights (MatMul/Gemm), via ONNX Runtime's tool."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="driftline-int8-") as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(model)
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # it advises pre-processing on the root logger
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(quiet)
        return dst.read_bytes()


def reference_npz(
    ex: Examples, layout: FeatureLayout, outputs: NDArray[np.float32], task: str
) -> bytes:
    """The drift monitor's reference: one array per feature plus `__output__`.

    `__output__` is what a prediction event's `output` holds: the class index
    (classification) or the predicted value (regression).
    """
    arrays: dict[str, NDArray[Any]] = {}
    for j, name in enumerate(layout.numeric_names):
        arrays[name] = ex.numeric[:, j].astype(np.float64)
    for j, name in enumerate(layout.categorical_names):
        arrays[name] = ex.categorical[:, j].astype(np.str_)
    served = outputs.argmax(axis=1) if task == "classification" else outputs
    arrays[artifacts.REFERENCE_OUTPUT_KEY] = served.astype(np.float64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
