"""Small learners on synthetic streams, for the trainer's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from driftline.api.spec import ModelSpec
from driftline.common.streams import DriftingStream, Rows
from driftline.trainer.examples import Examples
from driftline.trainer.learner import LearnerOptions, OnlineLearner

torch.set_num_threads(1)

LearnerFactory = Callable[..., OnlineLearner]


def model_spec(task: str = "classification", learner: dict[str, Any] | None = None) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "registry": {"trackingUri": "http://127.0.0.1:1", "name": "test"},
            "task": task,
            "classes": 2,
            "learner": learner or {"type": "mlp", "hidden": [32, 16]},
        }
    )


@pytest.fixture
def make_learner() -> LearnerFactory:
    def make(
        stream: DriftingStream,
        learner: dict[str, Any] | None = None,
        **options: Any,
    ) -> OnlineLearner:
        defaults: dict[str, Any] = {"batch_size": 64, "learning_rate": 1e-2, "seed": 0}
        return OnlineLearner(
            model_spec(stream.task, learner),
            stream.contract(),
            LearnerOptions(**{**defaults, **options}),
        )

    return make


def to_examples(
    learner: OnlineLearner, rows: Rows, served: np.ndarray[Any, Any] | None = None
) -> Examples:
    """Stream rows -> Examples in the learner's contract order, keyed by position."""
    n = len(rows)
    layout = learner.layout
    numeric = (
        np.stack([rows.column(c) for c in layout.numeric_names], axis=1)
        if layout.numeric
        else np.zeros((n, 0))
    )
    categorical = (
        np.stack([rows.column(c) for c in layout.categorical_names], axis=1).astype(object)
        if layout.categorical
        else np.zeros((n, 0), object)
    )
    key = np.arange(rows.start, rows.start + n)
    return learner.examples(numeric, categorical, rows.labels, key, served)


@pytest.fixture
def examples_of() -> Callable[..., Examples]:
    return to_examples
