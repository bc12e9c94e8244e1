"""The learner holds on data it was not tuned on: regression targets in any units, a
regression rule that changes, and a new concept learned from the few rows it has shown."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.api.spec import FeatureSpec, ModelSpec
from driftline.trainer.concept import ErrorRateMonitor
from driftline.trainer.export import export_onnx
from driftline.trainer.learner import LearnerOptions, OnlineLearner

FEATURES = [FeatureSpec(name="a"), FeatureSpec(name="b")]


def learner(task: str, **options: Any) -> OnlineLearner:
    spec = ModelSpec.model_validate(
        {
            "registry": {"trackingUri": "http://127.0.0.1:1", "name": "test"},
            "task": task,
            "learner": {"type": "mlp", "hidden": [32, 16]},
        }
    )
    return OnlineLearner(spec, FEATURES, LearnerOptions(**{"batch_size": 64, "seed": 0, **options}))


def rows(
    rng: np.random.Generator, n: int, start: int, rule: Any
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    return x, rule(x).astype(np.float32), np.arange(start, start + n)


def examples(model: OnlineLearner, x: Any, y: Any, key: Any, served: Any = None) -> Any:
    return model.examples(x, np.zeros((len(y), 0), object), y, key, served)


def served_then_learned(model: OnlineLearner, x: Any, y: Any, key: Any) -> Any:
    """One block as the worker sees it: labeled with what the model served for it."""
    ex = examples(model, x, y, key)
    out = model.predict(ex.numeric, ex.codes)
    if model.task == "classification":
        out = out.argmax(axis=1).astype(np.float32)
    return model.learn(examples(model, x, y, key, out))


def test_regression_targets_in_large_units_are_learned() -> None:
    """Offset 1e4 and scale 1e3: learned in standard units, scaled back inside the net."""
    rng = np.random.default_rng(0)
    model = learner("regression")

    def rule(x: Any) -> Any:
        return 10_000 + 1_000 * (np.sin(2 * x[:, 0]) - x[:, 1])

    for block in range(12):
        model.learn(examples(model, *rows(rng, 500, 500 * block, rule)))
    x, y, key = rows(rng, 2000, 10**6, rule)
    assert model.score(examples(model, x, y, key)) > 0.8
    assert abs(float(model.net.target_mean) - 10_000) < 200  # the graph carries the units


def test_exported_regression_graph_keeps_the_target_units() -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    model = learner("regression")
    x, y, key = rows(rng, 600, 0, lambda x: 5_000 + 300 * x[:, 0])
    model.learn(examples(model, x, y, key))
    graph = export_onnx(model.net, model.layout, "regression", 2)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    (value,) = session.run(None, {session.get_inputs()[0].name: x})
    torch_value = model.predict(x, np.zeros((len(x), 0), np.int64))
    np.testing.assert_allclose(value, torch_value, rtol=1e-5)
    assert float(np.mean(value)) > 4_000


def test_a_changed_regression_rule_opens_an_epoch() -> None:
    rng = np.random.default_rng(2)
    model = learner("regression", concept_window=250)

    def before(x: Any) -> Any:
        return 3 * x[:, 0] + x[:, 1] ** 2

    def after(x: Any) -> Any:
        return -3 * x[:, 0] + x[:, 1] ** 2

    for block in range(24):
        served_then_learned(model, *rows(rng, 250, 250 * block, before))
    assert model.epoch == 0  # a steady rule: no alarm
    opened = None
    for block in range(24, 32):
        report = served_then_learned(model, *rows(rng, 250, 250 * block, after))
        if report.concept is not None:
            opened = block
            break
    assert opened is not None and opened <= 26  # within 750 rows of the change at row 6000
    assert model.epochs[-1].start_seq >= 5_500


def test_residual_tolerance_survives_a_restart() -> None:
    monitor = ErrorRateMonitor(window=100)
    monitor.update_residuals(np.linspace(0, 2, 150), np.arange(150))
    assert monitor.tolerance is not None
    restored = ErrorRateMonitor(window=100)
    restored.load_state(monitor.state())
    assert restored.tolerance == monitor.tolerance


def test_a_new_concept_is_learned_from_the_rows_since_the_change() -> None:
    """An inversion told by a drift event: the rows since the change are learned at once,
    with the spec's batch of 256 (one pass over 300 rows would be two steps)."""
    rng = np.random.default_rng(3)
    model = learner("classification", batch_size=256)

    def rule(x: Any) -> Any:
        return (x[:, 0] + np.sin(3 * x[:, 1]) > 0).astype(np.float32)

    def inverted(x: Any) -> Any:
        return 1 - rule(x)

    x, y, key = rows(rng, 3000, 0, rule)
    ex = examples(model, x, y, key)
    model.observe(ex)
    model.fit_offline(ex, passes=5)
    test_x, test_y, test_key = rows(rng, 2000, 10**6, inverted)
    test = examples(model, test_x, test_y, test_key)
    assert model.score(test) < 0.2
    model.learn(examples(model, *rows(rng, 300, 3000, inverted)))
    model.open_epoch("drift event", from_seq=3000)
    assert model.score(test) > 0.85  # before any further row arrives


def test_a_rule_change_with_moved_inputs_opens_an_epoch() -> None:
    """Inputs move and the rule inverts: where the inputs did not move the serving model
    is now wrong, so this is a concept change, not a covariate shift to protect against."""
    rng = np.random.default_rng(4)
    model = learner("classification", concept_window=250)

    def rule(x: Any) -> Any:
        return (x[:, 0] + np.sin(3 * x[:, 1]) > 0).astype(np.float32)

    for block in range(16):
        served_then_learned(model, *rows(rng, 250, 250 * block, rule))
    assert model.epoch == 0
    for block in range(16, 24):
        x, y, key = rows(rng, 250, 250 * block, lambda x: 1 - rule(x))
        x[:, 0] = x[:, 0] * 0.5 + 0.6  # half the old range, shifted right: inputs moved
        report = served_then_learned(model, x, y, key)
        if report.concept is not None:
            break
    assert model.epoch == 1, [r.reason for r in model.epochs]
    assert "did not move" in model.epochs[-1].reason


def inverted_stream(model: OnlineLearner, seed: int = 0) -> list[float]:
    """1,500 rows of a boundary, then its labels inverted: accuracy per 100-row block."""
    rng = np.random.default_rng(seed)

    def rule(x: Any) -> Any:
        return (x[:, 1] > np.sin(3 * x[:, 0])).astype(np.float32)

    model.fit_offline(examples(model, *rows(rng, 1000, 0, rule)), passes=5)
    accuracy = []
    for block in range(30):
        flip = block >= 15
        x, y, key = rows(rng, 100, 1000 + 100 * block, rule)
        y = 1 - y if flip else y
        ex = examples(model, x, y, key)
        served = model.predict(ex.numeric, ex.codes).argmax(axis=1).astype(np.float32)
        accuracy.append(float(np.mean(served == y)))
        model.learn(examples(model, x, y, key, served))
    return accuracy


def test_an_inversion_is_recovered_within_a_few_hundred_rows() -> None:
    """The rows since the change show that swapping the outputs fits them: the last
    layer is permuted at once, instead of hundreds of steps turning every weight."""
    model = learner("classification", concept_window=100)
    accuracy = inverted_stream(model)
    assert np.mean(accuracy[:15]) > 0.85
    assert len(model.epochs) == 2
    assert min(accuracy[19:]) > 0.85, accuracy  # within 400 rows of the change


def test_rows_before_the_change_stay_out_of_the_new_epoch() -> None:
    """The batch that confirms the change starts with old-concept rows; learning them
    in the new epoch (and replaying them) would teach the old rule again."""
    model = learner("classification", concept_window=100)
    inverted_stream(model)
    start = model.epochs[1].start_seq
    slots = model.replay.current_slots()
    assert len(slots) and int(model.replay.seq[slots].min()) >= start


def test_a_fresh_network_races_the_adapted_one_and_the_better_serves() -> None:
    model = learner("classification", race_rows=300, remap_min_gain=2.0)  # no relabelling
    rng = np.random.default_rng(1)
    model.fit_offline(examples(model, *rows(rng, 1000, 0, lambda x: x[:, 0] > 0)), passes=5)
    adapted = model.net
    model.open_epoch("test")
    assert model.rival is not None and model.rival.net is not adapted
    # The new rule contradicts the old one everywhere: the fresh network wins the race.
    for block in range(4):
        x, y, key = rows(rng, 100, 1000 + 100 * block, lambda x: x[:, 0] < 0)
        model.learn(examples(model, x, y, key))
    assert model.rival is None  # 300 rows: the race is over
    assert model.net is not adapted
    x, y, key = rows(rng, 500, 10**6, lambda x: x[:, 0] < 0)
    assert model.score(examples(model, x, y, key)) > 0.9
    # What serves exports as one graph.
    assert export_onnx(model.net, model.layout, "classification", 2)


def test_a_small_bootstrap_set_gets_enough_steps() -> None:
    model = learner("classification", min_offline_steps=30)
    rng = np.random.default_rng(2)
    ex = examples(model, *rows(rng, 100, 0, lambda x: x[:, 0] + x[:, 1] > 0))
    model.fit_offline(ex, passes=3)
    assert model.trained == 100 * 6  # 2 steps a pass (batch 64): twice the passes asked
    model.fit_offline(ex.take(np.arange(64)), passes=20)
    assert model.trained == 100 * 6 + 64 * 30  # 1 step a pass: 30 passes
