"""The adapter on a frozen imported model: identity at start, recovery, one merged graph.

Bases are real scikit-learn models converted by skl2onnx and wrapped as an import
registers them; the merged graph runs in ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from driftline.api.spec import DynamicModelSpec, FeatureSpec, ModelSpec
from driftline.common.features import FeatureLayout
from driftline.common.streams import DriftingStream, make_stream
from driftline.inference.contract import FeatureContract
from driftline.inference.onnx_session import check_graph
from driftline.trainer import export
from driftline.trainer.adapter import AdapterLearner, FrozenBase
from driftline.trainer.checkpoint import (
    StateError,
    from_bytes,
    learner_state,
    restore_learner,
    to_bytes,
)
from driftline.trainer.examples import Examples
from driftline.trainer.import_sklearn import sklearn_source
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.onnx_adapter import adapt
from tests.trainer.conftest import to_examples


def imported_graph(estimator: Any, features: list[FeatureSpec], task: str) -> bytes:
    """The graph an import registers for `estimator` (skl2onnx, then the contract wrapper)."""
    layout = FeatureLayout.from_features(features)
    source = sklearn_source(estimator, layout, task, "skops")
    graph, _, _ = adapt(source.graph, layout, task, 2)
    return bytes(graph.SerializeToString())


def numeric_matrix(stream: DriftingStream, rows: Any) -> np.ndarray[Any, Any]:
    return np.stack([rows.column(c) for c in stream.numeric_names], axis=1).astype(np.float32)


def adapter_on(
    estimator: Any,
    stream: DriftingStream,
    task: str = "classification",
    adapter: dict[str, Any] | None = None,
    rows: int = 1000,
) -> tuple[AdapterLearner, Examples]:
    """A base fitted on `rows` rows of the stream's current concept, and an adapter on it."""
    sample = stream.take(rows)
    estimator.fit(numeric_matrix(stream, sample), sample.labels)
    features = stream.contract()
    spec = ModelSpec.model_validate(
        {
            "registry": {"trackingUri": "http://127.0.0.1:1", "name": "t"},
            "task": task,
            "strategy": "adapter",
            "adapter": adapter or {},
        }
    )
    graph = imported_graph(estimator, features, task)
    base = FrozenBase(graph, len(features), 0, task, 2)
    options = LearnerOptions(batch_size=64, learning_rate=1e-2, seed=0)
    learner = AdapterLearner(spec, features, options, base)
    ex = to_examples(learner, sample)
    learner.prime(ex)
    return learner, ex


def merged_answers(learner: AdapterLearner, ex: Examples) -> np.ndarray[Any, Any]:
    """The merged graph's answers, once inference's own check has taken the graph."""
    session = export.session(learner.export(2))
    spec = DynamicModelSpec.model_validate(
        {
            "model": learner.model.model_dump(by_alias=True),
            "features": [f.model_dump(by_alias=True) for f in learner.features],
            "kafka": {"bootstrapServers": "127.0.0.1:1"},
            "redis": {"url": "redis://127.0.0.1:1/0"},
        }
    )
    check_graph(session, FeatureContract(spec))
    return export.run_onnx(session, ex, learner.layout, learner.task)


def base_answers(learner: AdapterLearner, ex: Examples) -> np.ndarray[Any, Any]:
    out = learner.base.outputs(ex.numeric, ex.categorical)
    return out if learner.task == "classification" else out[:, 0]


@pytest.mark.parametrize(
    ("estimator", "adapter"),
    [
        (LogisticRegression(), None),
        (GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0), None),
        (LogisticRegression(), {"hidden": []}),
        (LogisticRegression(), {"hidden": [8], "features": False}),
    ],
    ids=["logistic", "gradient-boosting", "linear", "without-features"],
)
def test_the_adapter_starts_as_the_imported_model(
    estimator: Any, adapter: dict[str, Any] | None
) -> None:
    learner, ex = adapter_on(estimator, make_stream("sea", seed=1), adapter=adapter, rows=600)
    base = base_answers(learner, ex)
    merged = merged_answers(learner, ex)
    torch_out = learner.predict(ex.numeric, ex.codes)
    assert np.max(np.abs(merged - base)) <= 1e-6
    assert np.max(np.abs(torch_out - base)) <= 1e-6
    assert np.array_equal(merged.argmax(axis=1), base.argmax(axis=1))


@pytest.mark.parametrize(
    "estimator",
    [LinearRegression(), GradientBoostingRegressor(n_estimators=20, random_state=0)],
    ids=["linear", "gradient-boosting"],
)
def test_a_regression_adapter_starts_as_the_imported_model(estimator: Any) -> None:
    stream = make_stream("sea", seed=2)
    learner, ex = adapter_on(estimator, stream, task="regression", rows=600)
    base = base_answers(learner, ex)
    merged = merged_answers(learner, ex)
    # Relative beyond 1, as the import's parity check (float32 serving).
    assert np.max(np.abs(merged - base) / np.maximum(1.0, np.abs(base))) <= 1e-6
    # Learned on a shifted target, the merged graph still answers as torch does.
    shifted = stream.take(500)
    shifted.labels[:] = shifted.labels * 3.0 + 2.0
    later = to_examples(learner, shifted)
    learner.learn(later)
    torch_out = learner.predict(later.numeric, later.codes)
    got = merged_answers(learner, later)
    assert np.max(np.abs(got - torch_out) / np.maximum(1.0, np.abs(torch_out))) <= 1e-5


def test_the_adapter_recovers_after_the_labelling_rule_changes() -> None:
    stream = make_stream("sea", seed=3)  # SEA concept 0 labels x1 + x2 <= 8
    learner, _ = adapter_on(GradientBoostingClassifier(n_estimators=20, random_state=0), stream)
    stream.switch_to(3)  # threshold 9.5: a quarter of the old rule's region changes class
    for _ in range(25):
        learner.learn(to_examples(learner, stream.take(200)))
    test = stream.take(1000)
    ex = to_examples(learner, test)
    base = float(np.mean(base_answers(learner, ex).argmax(axis=1) == test.labels))
    merged = merged_answers(learner, ex)
    adapted = float(np.mean(merged.argmax(axis=1) == test.labels))
    print(f"\naccuracy after the change: imported {base:.3f}, adapter {adapted:.3f}")
    assert adapted >= base + 0.05 and adapted >= 0.92, (base, adapted)
    torch_out = learner.predict(ex.numeric, ex.codes)
    assert np.max(np.abs(merged - torch_out)) <= 1e-5


def test_categorical_features_reach_the_base_and_the_adapter() -> None:
    stream = make_stream("agrawal", seed=0)
    features = stream.contract()
    sample = stream.take(400)
    # A base that sees only the numerics, served through the contract (with categoricals).
    numeric_only = [f for f in features if f.type == "numeric"]
    estimator = LogisticRegression(max_iter=500).fit(numeric_matrix(stream, sample), sample.labels)
    layout = FeatureLayout.from_features(features)
    source = sklearn_source(
        estimator, FeatureLayout.from_features(numeric_only), "classification", "skops"
    )
    graph, _, _ = adapt(source.graph, layout, "classification", 2)
    spec = ModelSpec.model_validate(
        {"registry": {"trackingUri": "http://127.0.0.1:1", "name": "t"}, "strategy": "adapter"}
    )
    base = FrozenBase(graph.SerializeToString(), 6, 3, "classification", 2)
    learner = AdapterLearner(spec, features, LearnerOptions(batch_size=64, seed=0), base)
    ex = to_examples(learner, sample)
    learner.prime(ex)
    assert np.max(np.abs(merged_answers(learner, ex) - base_answers(learner, ex))) <= 1e-6
    learner.learn(ex)
    torch_out = learner.predict(ex.numeric, ex.codes)
    assert np.max(np.abs(merged_answers(learner, ex) - torch_out)) <= 1e-5


def test_the_adapter_state_round_trips() -> None:
    stream = make_stream("sea", seed=4)
    learner, ex = adapter_on(LogisticRegression(), stream, rows=400)
    learner.learn(ex)
    arrays, meta = learner_state(learner)
    again = AdapterLearner(learner.model, learner.features, learner.options, learner.base)
    restore_learner(again, *from_bytes(to_bytes(arrays, meta)))
    assert np.array_equal(
        again.predict(ex.numeric, ex.codes), learner.predict(ex.numeric, ex.codes)
    )
    assert len(again.replay) == len(learner.replay)
    # The other strategy's learner refuses it: switching strategies needs a new import.
    challenger = OnlineLearner(learner.model, learner.features, learner.options)
    with pytest.raises(StateError, match="does not match"):
        restore_learner(challenger, arrays, meta)


@pytest.mark.parametrize("opset", [13, 21])
def test_a_base_of_another_opset_is_merged(opset: int) -> None:
    """An ONNX import keeps its opset; the merged graph takes the newer of the two."""
    stream = make_stream("sea", seed=5)
    sample = stream.take(400)
    estimator = LogisticRegression().fit(numeric_matrix(stream, sample), sample.labels)
    original = convert_sklearn(
        estimator,
        initial_types=[("x", FloatTensorType([None, 3]))],
        options={id(estimator): {"zipmap": False}},
        target_opset={"": opset, "ai.onnx.ml": 1},
    )
    features = stream.contract()
    graph, _, _ = adapt(original, FeatureLayout.from_features(features), "classification", 2)
    spec = ModelSpec.model_validate(
        {"registry": {"trackingUri": "http://127.0.0.1:1", "name": "t"}, "strategy": "adapter"}
    )
    base = FrozenBase(graph.SerializeToString(), 3, 0, "classification", 2)
    learner = AdapterLearner(spec, features, LearnerOptions(batch_size=64, seed=0), base)
    ex = to_examples(learner, sample)
    learner.prime(ex)
    assert np.max(np.abs(merged_answers(learner, ex) - base_answers(learner, ex))) <= 1e-6
    learner.learn(ex)
    torch_out = learner.predict(ex.numeric, ex.codes)
    assert np.max(np.abs(merged_answers(learner, ex) - torch_out)) <= 1e-5
    merged = onnx.load_model_from_string(learner.export(2))
    domains = [o.domain for o in merged.opset_import]
    assert len(domains) == len(set(domains))
    assert max(o.version for o in merged.opset_import if o.domain == "") == max(opset, 17)
