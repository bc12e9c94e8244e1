"""Streams with known drift points, from River's synthetic generators.

Concept drift is watched the way the monitor watches it: through the errors of a
model that was trained on the first concept and then serves unchanged. Each scenario
trains a Hoeffding tree on concept A, then yields error streams (1 = wrong) of
`pre` samples of concept A followed by `post` samples of concept B. The inputs keep
their distribution across the switch; only the labeling rule moves.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import tree
from river.datasets import synth

Sample = tuple[dict[Any, Any], Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    concept_a: Callable[[], Iterator[Sample]]
    concept_b: Callable[[], Iterator[Sample]]
    kind: str = "abrupt"
    """abrupt | gradual (sigmoid of `width`, the drift point at its centre) | rotating."""
    width: int = 0


def sea(variant: int, seed: int) -> Callable[[], Iterator[Sample]]:
    return lambda: iter(synth.SEA(variant=variant, noise=0.1, seed=seed))


def agrawal(function: int, seed: int) -> Callable[[], Iterator[Sample]]:
    return lambda: iter(
        synth.Agrawal(classification_function=function, seed=seed, perturbation=0.2)
    )


def hyperplane(seed: int, mag_change: float = 0.0) -> Callable[[], Iterator[Sample]]:
    """A hyperplane's weights come from its seed: one seed, one concept."""
    return lambda: iter(
        synth.Hyperplane(
            seed=seed,
            n_features=10,
            n_drift_features=5,
            mag_change=mag_change,
            noise_percentage=0.05,
        )
    )


SCENARIOS = [
    Scenario(
        "sea-abrupt",
        "SEA, threshold 8 -> 9.5 (variant 0 -> 3), 10 % label noise",
        sea(0, 1),
        sea(3, 2),
    ),
    Scenario(
        "sea-subtle",
        "SEA, threshold 8 -> 7 (variant 0 -> 2), 10 % label noise",
        sea(0, 1),
        sea(2, 2),
    ),
    Scenario(
        "sea-gradual",
        "SEA 0 -> 3 along a sigmoid of width 2000 (delay from its centre)",
        sea(0, 1),
        sea(3, 2),
        kind="gradual",
        width=2000,
    ),
    Scenario(
        "hyperplane-abrupt",
        "hyperplane (10 dims) replaced by another hyperplane",
        hyperplane(1),
        hyperplane(2),
    ),
    Scenario(
        "hyperplane-rotating",
        "the same hyperplane starts rotating (mag_change 0.01)",
        hyperplane(1),
        hyperplane(1, 0.01),
        kind="rotating",
    ),
    Scenario(
        "agrawal-abrupt",
        "Agrawal, classification function 0 -> 2, 20 % perturbation",
        agrawal(0, 1),
        agrawal(2, 2),
    ),
]


class ErrorStreams:
    """Error streams of one scenario, from a model trained on concept A and then frozen.

    Runs take consecutive stretches of each concept's stream (fresh inputs every run).
    A rotating hyperplane must start from concept A's weights, so its drifted part is
    generated afresh each run and is the same in every run.
    """

    def __init__(self, scenario: Scenario, train: int = 10_000, seed: int = 0) -> None:
        self.scenario = scenario
        self.rng = np.random.default_rng(seed)
        self.a, self.b = scenario.concept_a(), scenario.concept_b()
        self.model = tree.HoeffdingTreeClassifier(grace_period=100)
        for x, y in itertools.islice(self.a, train):
            self.model.learn_one(x, y)

    def errors(self, samples: Iterator[Sample], n: int) -> np.ndarray:
        return np.fromiter(
            (self.model.predict_one(x) != y for x, y in itertools.islice(samples, n)),
            dtype=np.float64,
            count=n,
        )

    def run(self, pre: int, post: int) -> np.ndarray:
        """`pre` errors on concept A, then `post` from the drift point on."""
        before = self.errors(self.a, pre)
        kind = self.scenario.kind
        if kind == "abrupt":
            after = self.errors(self.b, post)
        elif kind == "rotating":
            after = self.errors(self.scenario.concept_b(), post)
        else:
            after = self.errors(self._sigmoid(post), post)
        return np.concatenate([before, after])

    def _sigmoid(self, n: int) -> Iterator[Sample]:
        """River's ConceptDriftStream transition: P(B) = 1 / (1 + exp(-4 t / width))."""
        for t in range(n):
            xa, xb = next(self.a), next(self.b)
            p = 1.0 / (1.0 + np.exp(-4.0 * t / self.scenario.width))
            yield xb if self.rng.random() < p else xa

    def calm(self, n: int) -> np.ndarray:
        """A stream without drift, as long as asked."""
        return self.errors(self.a, n)


def gaussian_shift(
    rng: np.random.Generator, n: int, drift_at: int, shifted: int, sigma: float, d: int = 10
) -> np.ndarray:
    """d standard normal features; from `drift_at` on, the first `shifted` move by `sigma`."""
    x = rng.normal(size=(n, d))
    x[drift_at:, :shifted] += sigma
    return x
