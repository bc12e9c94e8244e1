"""Training computes the same categorical codes as the exported graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import murmur3_32
from driftline.trainer.encoding import CategoricalEncoder


def ort_murmur(texts: list[str]) -> list[int]:
    node = helper.make_node("MurmurHash3", ["x"], ["h"], domain="com.microsoft", positive=1)
    graph = helper.make_graph(
        [node],
        "hash",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("h", TensorProto.UINT32, [None])],
    )
    model = helper.make_model(
        graph,
        ir_version=8,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [int(v) for v in sess.run(None, {"x": np.array(texts, dtype=object)})[0]]


def test_murmur3_matches_onnx_runtime() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyzABC0123456789 -_.éü€中")
    texts = ["", "a", "ab", "abc", "abcd", "abcde", "héllo wörld"]
    texts += ["".join(rng.choice(alphabet, size=rng.integers(0, 40))) for _ in range(500)]
    assert [murmur3_32(t.encode()) for t in texts] == ort_murmur(texts)


def test_codes_for_hashes_and_vocabularies() -> None:
    encoder = CategoricalEncoder(
        (
            FeatureSpec(name="a", type="categorical", hash_buckets=7),
            FeatureSpec(name="b", type="categorical", vocabulary=["x", "y"]),
        )
    )
    assert encoder.widths == (7, 3)
    codes = encoder(np.array([["p", "x"], ["q", "y"], ["p", "zzz"]], dtype=object))
    assert codes[:, 1].tolist() == [0, 1, 2]  # unknown values share the last slot
    assert codes[0, 0] == codes[2, 0] == murmur3_32(b"p") % 7
    assert codes.dtype == np.int64


def test_the_graph_codes_the_table_values_as_the_rules_do() -> None:
    """The ONNX preprocessing (spliced in front of the network) against `category_code`."""
    from driftline.api import artifacts
    from driftline.common.feature_values import category_code
    from driftline.common.features import FeatureLayout
    from driftline.trainer.export import CODES, splice_categorical_front
    from tests.common.test_feature_values import CASES, ERROR, FEATURES, MISSING

    layout = FeatureLayout.from_features([FEATURES["channel"], FEATURES["zip"]])
    graph = helper.make_graph(
        [helper.make_node("Identity", [CODES], ["codes"])],
        "codes",
        [helper.make_tensor_value_info(CODES, TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("codes", TensorProto.INT64, ["N", 2])],
    )
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    splice_categorical_front(model, layout)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    texts = sorted(
        {str(want) for _, _, want in CASES if want not in (ERROR, MISSING)} | {"", "web", "5"}
    )
    feed = np.array([[t, t] for t in texts], dtype=object)
    (codes,) = sess.run(None, {artifacts.INPUT_CATEGORICAL: feed})
    expected = [[category_code(f, t) for f in layout.categorical] for t in texts]
    assert codes.tolist() == expected
    assert CategoricalEncoder(layout.categorical)(feed).tolist() == expected
