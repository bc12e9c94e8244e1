"""Inverse-propensity weights: clipped, read from the labeled examples, and what they buy.

The simulation is the feedback loop the exploration guard exists for: the outcome
follows the decision served (a customer shown class `a` ends up in `a` with
probability 0.65, else in their true class), and the logging model is wrong for
0 < x0 < 0.4. On exploited traffic the model's own decisions confirm it there; the
explored rows say otherwise, but are few. Weighted by inverse propensity they count
as the uniform policy's traffic would, and the learner finds the true rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from driftline.api.events import LabeledExample, encode
from driftline.api.exploration import explores, propensity, uniform_label
from driftline.api.spec import FeatureSpec
from driftline.trainer.decode import LabeledDecoder
from driftline.trainer.examples import ips_weights
from driftline.trainer.learner import LearnerOptions, OnlineLearner

from .conftest import model_spec


def test_weights_are_clipped_inverse_propensities() -> None:
    odds = np.array([0.95, 0.05, 0.001, np.nan])
    assert ips_weights(odds, 20.0).tolist() == pytest.approx([1 / 0.95, 20.0, 20.0, 1.0])


class _Msg:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def _decoder(learner: OnlineLearner, max_weight: float | None) -> LabeledDecoder:
    return LabeledDecoder(
        learner.layout, learner.encoder, "m", "classification", 2, None, max_weight
    )


def _labeled(i: int, explored: bool, served: float | None, odds: float | None) -> bytes:
    return encode(
        LabeledExample(
            request_id=f"r{i}", model="m", model_version="1", variant="stable",
            features={"x0": 0.1, "x1": 0.2}, label=1.0, output=0.0, ts_prediction=1.0,
            ts_label=2.0, explored=explored, served=served, propensity=odds,
        )
    )  # fmt: skip


def test_the_decoder_weighs_rows_by_their_logged_propensity_when_exploration_is_on() -> None:
    learner = _learner(0)
    rows = [(False, None, 0.95), (True, 1.0, 0.05), (False, None, None)]
    msgs = [_Msg(_labeled(i, *row), i) for i, row in enumerate(rows)]
    on = _decoder(learner, 10.0).decode(msgs).examples.weight
    assert on.tolist() == pytest.approx([1 / 0.95, 10.0, 1.0])
    assert _decoder(learner, None).decode(msgs).examples.weight.tolist() == [1.0, 1.0, 1.0]


def _learner(seed: int) -> OnlineLearner:
    return OnlineLearner(
        model_spec(learner={"type": "logistic"}),
        [FeatureSpec.model_validate({"name": "x0"}), FeatureSpec.model_validate({"name": "x1"})],
        LearnerOptions(batch_size=64, seed=seed, detect_concept=False),
    )


def _feedback_loop(seed: int, n: int = 20_000, epsilon: float = 0.1) -> dict[str, Any]:
    """Logged traffic of a wrong model under uniform exploration; outcomes follow decisions."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(int)
    model = (x[:, 0] > 0.4).astype(int)  # wrong for 0 < x0 < 0.4
    keys = [f"entity-{seed}-{i}" for i in range(n)]
    served = np.array(
        [
            uniform_label("m", key, 2) if explores("m", key, epsilon) else own
            for key, own in zip(keys, model, strict=True)
        ]
    )
    odds = np.array(
        [propensity(int(a), int(m), epsilon, 2) for a, m in zip(served, model, strict=True)]
    )
    label = np.where(rng.random(n) < 0.65, served, truth).astype(np.float32)
    return {"x": x, "label": label, "odds": odds}


def _contested_accuracy(seed: int, weighted: bool) -> float:
    """Accuracy against the true rule where the logging model was wrong."""
    data = _feedback_loop(seed)
    learner = _learner(seed)
    n = len(data["label"])
    ex = learner.examples(data["x"], np.zeros((n, 0), object), data["label"], np.arange(n))
    if weighted:
        ex = dataclasses.replace(ex, weight=ips_weights(data["odds"], 20.0))
    learner.learn(ex)
    rng = np.random.default_rng(100 + seed)
    probe = np.stack([rng.uniform(0.05, 0.35, 2000), rng.uniform(-1, 1, 2000)], 1)
    answers = learner.predict(probe.astype(np.float32), np.zeros((2000, 0), np.int64))
    return float((answers.argmax(1) == 1).mean())  # the truth there is class 1


@pytest.mark.parametrize("seed", [0, 1])
def test_weighting_by_inverse_propensity_breaks_the_feedback_loop(seed: int) -> None:
    unweighted = _contested_accuracy(seed, weighted=False)
    weighted = _contested_accuracy(seed, weighted=True)
    assert unweighted < 0.5, "unweighted, the model's own decisions should confirm it"
    assert weighted > 0.7, f"weighted {weighted:.2f} (unweighted {unweighted:.2f})"
