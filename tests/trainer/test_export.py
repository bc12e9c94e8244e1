"""The exported ONNX graph keeps the registry contract and equals torch."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest

from driftline.api import artifacts
from driftline.common.streams import AgrawalStream, CovariateShiftStream, SEAStream
from driftline.trainer import export
from driftline.trainer.examples import Examples
from driftline.trainer.learner import OnlineLearner

LearnerFactory = Callable[..., OnlineLearner]

CASES = {
    "numeric only": (SEAStream, {}),
    "hashed categorical": (CovariateShiftStream, {}),
    "vocabulary": (AgrawalStream, {}),
    "regression": (CovariateShiftStream, {"task": "regression", "noise": 0.1}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_runtime_equals_torch(
    case: str, make_learner: LearnerFactory, examples_of: Callable[..., Examples]
) -> None:
    cls, options = CASES[case]
    stream = cls(seed=1, **options)  # type: ignore[abstract]
    learner = make_learner(stream)
    learner.fit_offline(examples_of(learner, stream.take(3000)), passes=2)
    rows = examples_of(learner, stream.take(500))
    graph = export.export_onnx(learner.net, learner.layout, stream.task, 2)
    assert (
        export.parity(
            graph, learner.predict(rows.numeric, rows.codes), rows, learner.layout, stream.task
        )
        <= 1e-5
    )

    model = onnx.load_from_string(graph)
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    want_inputs = {}
    if learner.layout.numeric:
        want_inputs[artifacts.INPUT_NUMERIC] = onnx.TensorProto.FLOAT
    if learner.layout.categorical:
        want_inputs[artifacts.INPUT_CATEGORICAL] = onnx.TensorProto.STRING
    assert inputs == want_inputs
    if stream.task == "classification":
        assert outputs == {
            artifacts.OUTPUT_LABEL: onnx.TensorProto.INT64,
            artifacts.OUTPUT_PROBABILITIES: onnx.TensorProto.FLOAT,
        }
        sess = export.session(graph)
        label, probabilities = sess.run(None, export.onnx_inputs(rows, learner.layout))
        assert label.shape == (500,) and probabilities.shape == (500, 2)
        assert (label == probabilities.argmax(axis=1)).all()
    else:
        assert outputs == {artifacts.OUTPUT_VALUE: onnx.TensorProto.FLOAT}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["driftline.feature_contract"] == learner.layout.contract_hash()


def test_missing_numeric_is_imputed_with_the_training_mean(
    make_learner: LearnerFactory, examples_of: Callable[..., Examples]
) -> None:
    stream = SEAStream(seed=2)
    learner = make_learner(stream)
    learner.fit_offline(examples_of(learner, stream.take(2000)), passes=1)
    mean = learner.net.preprocess.mean.numpy()  # type: ignore[operator]
    rows = examples_of(learner, stream.take(4))
    missing = rows.numeric.copy()
    missing[:, 2] = np.nan
    imputed = missing.copy()
    imputed[:, 2] = mean[2]
    sess = export.session(export.export_onnx(learner.net, learner.layout, "classification", 2))
    (a,) = sess.run([artifacts.OUTPUT_PROBABILITIES], {artifacts.INPUT_NUMERIC: missing})
    (b,) = sess.run([artifacts.OUTPUT_PROBABILITIES], {artifacts.INPUT_NUMERIC: imputed})
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_reference_sample_loads_without_pickle(
    make_learner: LearnerFactory, examples_of: Callable[..., Examples]
) -> None:
    stream = AgrawalStream(seed=3)
    learner = make_learner(stream)
    rows = examples_of(learner, stream.take(100))
    data = export.reference_npz(
        rows, learner.layout, learner.predict(rows.numeric, rows.codes), "classification"
    )
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays: dict[str, Any] = {k: npz[k] for k in npz.files}
    assert set(arrays) == {f.name for f in stream.contract()} | {artifacts.REFERENCE_OUTPUT_KEY}
    assert arrays["salary"].dtype == np.float64 and arrays["elevel"].dtype.kind == "U"
    assert set(np.unique(arrays[artifacts.REFERENCE_OUTPUT_KEY])) <= {0.0, 1.0}


def test_int8_export_stays_close(
    make_learner: LearnerFactory, examples_of: Callable[..., Examples]
) -> None:
    stream = SEAStream(seed=4)
    learner = make_learner(stream)
    learner.fit_offline(examples_of(learner, stream.take(3000)), passes=2)
    rows = examples_of(learner, stream.take(1000))
    graph = export.export_onnx(learner.net, learner.layout, "classification", 2)
    int8 = export.quantize_int8(graph)
    full = export.run_onnx(export.session(graph), rows, learner.layout, "classification")
    small = export.run_onnx(export.session(int8), rows, learner.layout, "classification")
    assert np.mean(full.argmax(1) == small.argmax(1)) > 0.97
