"""Fit an ONNX graph made elsewhere to the artifact contract serving feeds.

Serving feeds every graph the same two inputs (`driftline.api.artifacts`): `numeric`
(float32 [N, k], the spec's numeric features in order) and `categorical` (string
[N, m]); it reads `label` and `probabilities` (classification) or `value`
(regression). A model made elsewhere takes one of:

- the contract's inputs already (`numeric`, `categorical`);
- one float tensor [N, k] whose k columns are the spec's numeric features in order
  (a spec without categorical features), or named features in the model's own order
  when the model knows its column names (a booster trained on a DataFrame);
- one tensor per feature, named after the feature ([N, 1] or [N]).

`adapt` keeps the original graph whole (its names prefixed, so nothing collides)
and wraps it: in front, a `Gather` of each original input's columns from the
contract's tensor (and a `Cast` where the model takes another type); behind, its
probabilities (or value) cast to float32 under the contract's name, and `label` as
their argmax. Mapping errors are raised at import as `MappingError`, naming the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from driftline.api import artifacts
from driftline.common.features import FeatureLayout

PREFIX: Final = "src_"
FLOATS: Final = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16})
NUMBERS: Final = FLOATS | {TensorProto.INT64, TensorProto.INT32}


class MappingError(ValueError):
    """The model's inputs or outputs do not map onto the spec; the message names them."""


@dataclass(frozen=True)
class InputMap:
    """One input of the original graph, and where its values come from."""

    name: str
    source: str  # artifacts.INPUT_NUMERIC or artifacts.INPUT_CATEGORICAL
    columns: tuple[int, ...]
    rank: int  # 2: [N, len(columns)]; 1: [N] (one column)
    elem_type: int  # the TensorProto type the original graph takes


def _shape(value: onnx.ValueInfoProto) -> list[int | str | None]:
    if not value.type.HasField("tensor_type"):
        return []
    dims: list[int | str | None] = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def _elem(value: onnx.ValueInfoProto) -> int | None:
    if not value.type.HasField("tensor_type"):
        return None
    return int(value.type.tensor_type.elem_type)


def _type_name(elem: int | None) -> str:
    return "not a tensor" if elem is None else f"tensor({TensorProto.DataType.Name(elem).lower()})"


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (initializers listed as inputs are not)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def map_inputs(
    model: onnx.ModelProto, layout: FeatureLayout, columns: Sequence[str] | None = None
) -> list[InputMap]:
    """How each input of `model` is fed from the contract's inputs; `MappingError` if not.

    `columns` names the features of a single [N, k] input in its own order (a model
    that knows its column names); without, they are the spec's numeric features in order.
    """
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    numeric, categorical = layout.numeric_names, layout.categorical_names
    spec_says = (
        f"the spec has {len(numeric)} numeric feature(s): {', '.join(numeric) or '-'}"
        f" and {len(categorical)} categorical: {', '.join(categorical) or '-'}"
    )
    contract = {artifacts.INPUT_NUMERIC: numeric, artifacts.INPUT_CATEGORICAL: categorical}
    if names and set(names) <= set(contract):
        return [_whole(i, i.name, contract[i.name]) for i in inputs]
    features = {**dict.fromkeys(numeric, artifacts.INPUT_NUMERIC)}
    features.update(dict.fromkeys(categorical, artifacts.INPUT_CATEGORICAL))
    if names and set(names) <= set(features):
        return [_per_feature(i, features[i.name], layout) for i in inputs]
    if len(inputs) == 1 and columns is not None:
        return [_named_columns(inputs[0], columns, numeric)]
    if len(inputs) == 1:
        (single,) = inputs
        if categorical:
            raise MappingError(
                f"the model's input {single.name!r} is one tensor, but {spec_says}: export the "
                "model with one input per feature (named after it), or with the inputs "
                "'numeric' and 'categorical'"
            )
        return [_whole(single, artifacts.INPUT_NUMERIC, numeric)]
    unknown = [n for n in names if n not in features]
    raise MappingError(
        f"the model's inputs {unknown} are not features of the spec ({spec_says}); name one "
        "input per feature after it, or give one [N, k] float input of the numeric features"
    )


def _whole(value: onnx.ValueInfoProto, source: str, features: Sequence[str]) -> InputMap:
    shape, elem = _shape(value), _elem(value)
    kind = "numeric" if source == artifacts.INPUT_NUMERIC else "categorical"
    if len(shape) != 2:
        raise MappingError(
            f"the model's input {value.name!r} has shape {shape}; expected [N, {len(features)}] "
            f"(the spec's {kind} features in order)"
        )
    width = shape[1]
    if isinstance(width, int) and width != len(features):
        raise MappingError(
            f"the model's input {value.name!r} has {width} columns; the spec has "
            f"{len(features)} {kind} features: {', '.join(features)}"
        )
    _check_type(value.name, elem, source)
    assert elem is not None
    return InputMap(value.name, source, tuple(range(len(features))), 2, elem)


def _named_columns(
    value: onnx.ValueInfoProto, columns: Sequence[str], numeric: Sequence[str]
) -> InputMap:
    """One [N, k] input whose k columns are the named numeric features, in any order."""
    unknown = [c for c in columns if c not in numeric]
    if unknown:
        raise MappingError(
            f"the model's input {value.name!r} has columns {unknown}, which are not numeric "
            f"features of the spec ({', '.join(numeric) or '-'})"
        )
    shape, elem = _shape(value), _elem(value)
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(columns)):
        raise MappingError(
            f"the model's input {value.name!r} has shape {shape}; its columns are "
            f"{len(columns)} features: {', '.join(columns)}"
        )
    _check_type(value.name, elem, artifacts.INPUT_NUMERIC)
    assert elem is not None
    where = tuple(numeric.index(c) for c in columns)
    return InputMap(value.name, artifacts.INPUT_NUMERIC, where, 2, elem)


def _per_feature(value: onnx.ValueInfoProto, source: str, layout: FeatureLayout) -> InputMap:
    shape, elem = _shape(value), _elem(value)
    names = layout.numeric_names if source == artifacts.INPUT_NUMERIC else layout.categorical_names
    if len(shape) not in (1, 2) or (
        len(shape) == 2 and isinstance(shape[1], int) and shape[1] != 1
    ):
        raise MappingError(
            f"the model's input {value.name!r} has shape {shape}; one feature is [N, 1] or [N]"
        )
    _check_type(value.name, elem, source)
    assert elem is not None
    return InputMap(value.name, source, (names.index(value.name),), len(shape), elem)


def _check_type(name: str, elem: int | None, source: str) -> None:
    if source == artifacts.INPUT_NUMERIC and elem not in NUMBERS:
        raise MappingError(
            f"the model's input {name!r} is {_type_name(elem)}; numeric features are sent as "
            "numbers (float, double or integer tensors)"
        )
    if source == artifacts.INPUT_CATEGORICAL and elem != TensorProto.STRING:
        raise MappingError(
            f"the model's input {name!r} is {_type_name(elem)}; categorical features are sent "
            "as text (tensor(string))"
        )


def choose_output(model: onnx.ModelProto, task: str, classes: int, wanted: str | None) -> str:
    """The output that holds the probabilities (classification) or the value (regression)."""
    outputs = {o.name: o for o in model.graph.output}
    if wanted is not None:
        if wanted not in outputs:
            raise MappingError(f"the model has no output {wanted!r} (outputs: {sorted(outputs)})")
        found = [outputs[wanted]]
    else:
        contract = (
            artifacts.OUTPUT_PROBABILITIES if task == "classification" else artifacts.OUTPUT_VALUE
        )
        found = [outputs[contract]] if contract in outputs else []
        if not found:
            found = [o for o in outputs.values() if _elem(o) in FLOATS]
            if task == "classification":
                found = [o for o in found if len(_shape(o)) == 2]
    if not found:
        zipmap = [n for n, o in outputs.items() if o.type.HasField("sequence_type")]
        hint = (
            f"; {zipmap} is a sequence of maps (skl2onnx's ZipMap): convert with "
            "options={'zipmap': False}"
            if zipmap
            else ""
        )
        what = "[N, classes] float probabilities" if task == "classification" else "float values"
        raise MappingError(
            f"no output of the model holds {what} (outputs: {sorted(outputs)}){hint}"
        )
    if len(found) > 1:
        raise MappingError(
            f"the model has several candidate outputs {[o.name for o in found]}; name the one "
            "to serve with --output"
        )
    (out,) = found
    elem, shape = _elem(out), _shape(out)
    if elem not in FLOATS:
        raise MappingError(f"the model's output {out.name!r} is {_type_name(elem)}, not float")
    if task == "classification":
        width = shape[1] if len(shape) == 2 else None
        if len(shape) != 2 or (isinstance(width, int) and width != classes):
            raise MappingError(
                f"the model's output {out.name!r} has shape {shape}; the spec has {classes} "
                f"classes, so [N, {classes}] probabilities are expected"
            )
    elif len(shape) == 2 and isinstance(shape[1], int) and shape[1] != 1:
        raise MappingError(
            f"the model's output {out.name!r} has shape {shape}; expected [N] or [N, 1]"
        )
    return str(out.name)


def adapt(
    original: onnx.ModelProto,
    layout: FeatureLayout,
    task: str,
    classes: int,
    output: str | None = None,
    columns: Sequence[str] | None = None,
) -> tuple[onnx.ModelProto, list[InputMap], str]:
    """The contract-shaped graph, the input mapping and the original output it serves."""
    maps = map_inputs(original, layout, columns)
    served = choose_output(original, task, classes, output)
    model = onnx.compose.add_prefix(original, PREFIX)
    graph = model.graph
    front: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    for j, m in enumerate(maps):
        index = np.array(m.columns, np.int64) if m.rank == 2 else np.array(m.columns[0], np.int64)
        inits.append(numpy_helper.from_array(index, f"driftline_columns{j}"))
        target = PREFIX + m.name
        wanted = TensorProto.FLOAT if m.source == artifacts.INPUT_NUMERIC else TensorProto.STRING
        gathered = target if m.elem_type == wanted else f"driftline_gathered{j}"
        front.append(
            helper.make_node("Gather", [m.source, f"driftline_columns{j}"], [gathered], axis=1)
        )
        if gathered != target:
            front.append(helper.make_node("Cast", [gathered], [target], to=m.elem_type))
    back: list[onnx.NodeProto] = []
    if task == "classification":
        back.append(
            helper.make_node(
                "Cast", [PREFIX + served], [artifacts.OUTPUT_PROBABILITIES], to=TensorProto.FLOAT
            )
        )
        back.append(
            helper.make_node(
                "ArgMax",
                [artifacts.OUTPUT_PROBABILITIES],
                [artifacts.OUTPUT_LABEL],
                axis=1,
                keepdims=0,
            )
        )
        outputs = [
            helper.make_tensor_value_info(artifacts.OUTPUT_LABEL, TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info(
                artifacts.OUTPUT_PROBABILITIES, TensorProto.FLOAT, ["N", classes]
            ),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "driftline_flat"))
        back.append(
            helper.make_node("Reshape", [PREFIX + served, "driftline_flat"], ["driftline_v"])
        )
        back.append(
            helper.make_node(
                "Cast", ["driftline_v"], [artifacts.OUTPUT_VALUE], to=TensorProto.FLOAT
            )
        )
        outputs = [helper.make_tensor_value_info(artifacts.OUTPUT_VALUE, TensorProto.FLOAT, ["N"])]
    inputs = []
    if layout.numeric:
        inputs.append(
            helper.make_tensor_value_info(
                artifacts.INPUT_NUMERIC, TensorProto.FLOAT, ["N", len(layout.numeric)]
            )
        )
    if layout.categorical:
        inputs.append(
            helper.make_tensor_value_info(
                artifacts.INPUT_CATEGORICAL, TensorProto.STRING, ["N", len(layout.categorical)]
            )
        )
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(front + existing + back)
    graph.initializer.extend(inits)
    kept = [i for i in graph.input if i.name in {t.name for t in graph.initializer}]
    del graph.input[:]
    graph.input.extend(inputs + kept)
    del graph.output[:]
    graph.output.extend(outputs)
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", 17))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise MappingError(f"the wrapped graph is not valid ONNX: {exc}") from exc
    return model, maps, served


def original_feeds(
    maps: Sequence[InputMap], numeric: NDArray[np.float32], categorical: NDArray[Any]
) -> dict[str, NDArray[Any]]:
    """What the original graph is fed for the contract's (`numeric`, `categorical`)."""
    feeds: dict[str, NDArray[Any]] = {}
    for m in maps:
        source = numeric if m.source == artifacts.INPUT_NUMERIC else categorical
        columns = source[:, list(m.columns)] if m.rank == 2 else source[:, m.columns[0]]
        if m.elem_type == TensorProto.STRING:
            feeds[m.name] = np.asarray(columns, dtype=object)
        else:
            dtype = helper.tensor_dtype_to_np_dtype(m.elem_type)
            feeds[m.name] = np.ascontiguousarray(columns.astype(dtype))
    return feeds
