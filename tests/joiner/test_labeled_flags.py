"""A labeled example keeps the `flags` of the prediction it joins (the trainer sees them)."""

from __future__ import annotations

from driftline.api.events import Outcome, Prediction
from driftline.joiner.join import labeled_example


def test_flags_pass_from_the_prediction_to_the_labeled_example() -> None:
    prediction = Prediction(
        request_id="r1", model="m", model_version="1", variant="stable",
        features={"x1": 2.0}, output=1.0, ts=1.0, flags={"x1": "clip"},
    )  # fmt: skip
    outcome = Outcome(request_id="r1", label=1.0, ts=2.0)
    assert labeled_example(prediction, outcome).flags == {"x1": "clip"}
    unmarked = Prediction(
        **{**{f: getattr(prediction, f) for f in prediction.__struct_fields__}, "flags": None}
    )
    assert labeled_example(unmarked, outcome).flags is None


def test_exploration_passes_to_the_labeled_example() -> None:
    prediction = Prediction(
        request_id="r1", model="m", model_version="1", variant="stable", features={"x1": 2.0},
        output=1.0, ts=1.0, explored=True, served=0.0, propensity=0.05,
    )  # fmt: skip
    example = labeled_example(prediction, Outcome(request_id="r1", label=0.0, ts=2.0))
    assert (example.explored, example.served, example.propensity) == (True, 0.0, 0.05)
    assert example.output == 1.0  # the model's own answer, as logged
