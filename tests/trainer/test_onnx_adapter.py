"""Fitting foreign ONNX graphs to the artifact contract: input shapes and types, outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from driftline.api import artifacts
from driftline.api.spec import FeatureSpec
from driftline.common.features import FeatureLayout
from driftline.trainer.onnx_adapter import MappingError, adapt, original_feeds

LAYOUT = FeatureLayout.from_features(
    [
        FeatureSpec(name="a"),
        FeatureSpec(name="b"),
        FeatureSpec(name="c"),
        FeatureSpec(name="color", type="categorical", vocabulary=["red", "blue"]),
    ]
)


def per_feature_model() -> onnx.ModelProto:
    """a: float [N], b: double [N, 1], c: int64 [N, 1], color: string [N, 1] -> probs [N, 2]."""
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N"]),
        helper.make_tensor_value_info("b", TensorProto.DOUBLE, ["N", 1]),
        helper.make_tensor_value_info("c", TensorProto.INT64, ["N", 1]),
        helper.make_tensor_value_info("color", TensorProto.STRING, ["N", 1]),
    ]
    w = numpy_helper.from_array(
        np.array([[1.0, -1.0], [0.5, 0.2], [-0.3, 0.1], [2.0, 0.0]], np.float32), "w"
    )
    shape = numpy_helper.from_array(np.array([-1, 1], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["a", "shape"], ["a2"]),
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
        helper.make_node(
            "LabelEncoder",
            ["color"],
            ["red"],
            domain="ai.onnx.ml",
            keys_strings=["red"],
            values_floats=[1.0],
            default_float=0.0,
        ),
        helper.make_node("Concat", ["a2", "bf", "cf", "red"], ["x"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [w, shape])
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        ir_version=9,  # what ONNX Runtime reads, whatever the onnx package writes by default
    )


def run(model: onnx.ModelProto, feeds: dict[str, Any], output: str) -> np.ndarray[Any, Any]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run([output], feeds)[0])


def test_one_input_per_feature_of_any_shape_and_type() -> None:
    original = per_feature_model()
    wrapped, maps, served = adapt(original, LAYOUT, "classification", 2)
    assert served == "probs" and {m.name for m in maps} == {"a", "b", "c", "color"}
    assert [i.name for i in wrapped.graph.input] == ["numeric", "categorical"]
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(50, 3)).astype(np.float32)
    numeric[:, 2] = np.round(numeric[:, 2] * 3)
    categorical = rng.choice(["red", "blue", "green"], size=(50, 1)).astype(object)
    ours = run(wrapped, {"numeric": numeric, "categorical": categorical}, "probabilities")
    theirs = run(original, original_feeds(maps, numeric, categorical), "probs")
    assert np.max(np.abs(ours - theirs)) < 1e-6
    label = run(wrapped, {"numeric": numeric, "categorical": categorical}, artifacts.OUTPUT_LABEL)
    assert label.dtype == np.int64 and (label == ours.argmax(axis=1)).all()


def test_a_text_input_for_a_numeric_feature_is_refused() -> None:
    model = per_feature_model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.STRING
    with pytest.raises(MappingError, match="input 'a' is tensor\\(string\\); numeric features"):
        adapt(model, LAYOUT, "classification", 2)


def test_probabilities_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(MappingError, match="the spec has 3 classes"):
        adapt(per_feature_model(), LAYOUT, "classification", 3)


def test_one_tensor_cannot_carry_categorical_features() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(MappingError, match="input 'x' is one tensor, but the spec has 3 numeric"):
        adapt(helper.make_model(graph), LAYOUT, "classification", 2)


def one_tensor_model(width: int) -> onnx.ModelProto:
    """x [N, width] -> softmax over its first two columns."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["first"]),
        helper.make_node("Softmax", ["first"], ["y"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([v], np.int64), n)
        for n, v in (("starts", 0), ("ends", 2), ("axes", 1))
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_one_tensor_of_named_columns_in_the_model_s_own_order() -> None:
    """A model that names its columns (a booster fit on a DataFrame) takes them in its order,
    a subset of the numeric features, even beside categorical ones."""
    wrapped, maps, _ = adapt(one_tensor_model(2), LAYOUT, "classification", 2, columns=["c", "a"])
    assert maps[0].columns == (2, 0)
    numeric = np.array([[1.0, 9.0, 3.0], [0.0, 9.0, -1.0]], np.float32)
    categorical = np.array([["red"], ["blue"]], dtype=object)
    ours = run(wrapped, {"numeric": numeric, "categorical": categorical}, "probabilities")
    theirs = run(one_tensor_model(2), {"x": numeric[:, [2, 0]]}, "y")
    assert np.max(np.abs(ours - theirs)) < 1e-7
    with pytest.raises(MappingError, match=r"input 'x' has columns \['color'\], which are not"):
        adapt(one_tensor_model(2), LAYOUT, "classification", 2, columns=["a", "color"])
    with pytest.raises(MappingError, match=r"input 'x' has shape \['N', 2\]; its columns are 3"):
        adapt(one_tensor_model(2), LAYOUT, "classification", 2, columns=["a", "b", "c"])


def test_parity_is_absolute_up_to_one_and_relative_beyond() -> None:
    from driftline.trainer.model_import import ModelImportError, check_probabilities
    from driftline.trainer.model_import import parity_difference as diff

    assert diff(np.array([0.5, 1000.01]), np.array([0.5, 1000.0])) == pytest.approx(1e-5)
    assert diff(np.array([0.50001]), np.array([0.5])) == pytest.approx(1e-5)
    check_probabilities(np.array([[0.2, 0.8], [1.0, 0.0]]))
    with pytest.raises(ModelImportError, match="not probabilities"):
        check_probabilities(np.array([[2.0, -1.0]]))
    with pytest.raises(ModelImportError, match="not probabilities"):
        check_probabilities(np.array([[0.2, 0.2]]))
