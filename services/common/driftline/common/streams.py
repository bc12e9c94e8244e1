"""Seedable synthetic streams that drift at known points, in numpy only.

The trainer's bootstrap, the tests, the benchmarks and the demo all need labeled
data whose changes are known in advance: a concept switch at position 20 000, a
new input region at 30 000. These generators give exactly that, reproducibly from
a seed, without torch or River (so any part may import them cheaply).

Every stream declares its feature contract (`contract()`, a list of
`FeatureSpec`, the same objects a DynamicModel holds) and yields `Rows`: numeric
columns, categorical columns, labels and the concept that produced each row.

- `SEAStream`: three numbers in [0, 10], label `x1 + x2 <= theta`; the concept
  (theta) switches abruptly (Street & Kim, 2001).
- `HyperplaneStream`: a hyperplane that rotates a little with every row, and jumps
  to a new orientation at each concept switch (Hulten et al., 2001).
- `CovariateShiftStream`: a fixed labeling rule, inputs drawn around the centre of
  one segment at a time: a new segment moves the inputs, never the rule.
- `AgrawalStream`: the ten loan-approval functions of Agrawal et al. (1993); the
  concept is the function, and the age range can be narrowed to shift inputs.

A schedule `[(position, concept), ...]` says which concept is active from which
row on; `switch_to()` changes the concept from the current position (the demo).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from driftline.api.spec import FeatureSpec

Task = Literal["classification", "regression"]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Rows:
    """A block of consecutive rows of one stream."""

    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    numeric: FloatArray
    """float64 [n, k], columns in `numeric_names` order."""
    categorical: NDArray[np.str_]
    """str [n, m], columns in `categorical_names` order."""
    labels: FloatArray
    """Class index (classification) or target value (regression), [n]."""
    concept: NDArray[np.int64]
    """Which concept (or segment) produced each row, [n]."""
    start: int
    """Position of the first row in the stream."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def column(self, name: str) -> NDArray[Any]:
        if name in self.numeric_names:
            return self.numeric[:, self.numeric_names.index(name)]
        return self.categorical[:, self.categorical_names.index(name)]

    def features(self) -> list[dict[str, float | str]]:
        """One feature dict per row, as a client would send it."""
        names = self.numeric_names + self.categorical_names
        out: list[dict[str, float | str]] = []
        numeric = self.numeric.tolist()
        categorical = self.categorical.tolist()
        for num, cat in zip(numeric, categorical, strict=True):
            out.append(dict(zip(names, [*num, *cat], strict=True)))
        return out


class DriftingStream(ABC):
    """Base of the generators: a seeded rng, a position and a concept schedule."""

    name: ClassVar[str]
    task: Task = "classification"
    classes: int = 2
    n_concepts: ClassVar[int] = 1

    def __init__(
        self,
        seed: int = 0,
        schedule: Sequence[tuple[int, int]] = ((0, 0),),
        noise: float = 0.0,
    ) -> None:
        if not 0.0 <= noise < 1.0:
            raise ValueError(f"noise must be in [0, 1), got {noise}")
        self.seed = seed
        self.noise = noise
        self.position = 0
        self._rng = np.random.default_rng(seed)
        self._schedule = sorted(schedule)
        if not self._schedule or self._schedule[0][0] != 0:
            raise ValueError("a schedule must say which concept is active from position 0")
        for _, concept in self._schedule:
            self._check_concept(concept)

    # -- the contract ---------------------------------------------------------------

    @abstractmethod
    def contract(self) -> list[FeatureSpec]:
        """The features this stream produces, as a DynamicModel would declare them."""

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.contract() if f.type == "numeric")

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.contract() if f.type == "categorical")

    def check_contract(self, features: Sequence[FeatureSpec]) -> None:
        """Raise ValueError unless `features` has exactly this stream's names and types."""
        want = {f.name: f.type for f in self.contract()}
        have = {f.name: f.type for f in features}
        if want != have:
            missing = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            wrong = sorted(n for n in set(want) & set(have) if want[n] != have[n])
            raise ValueError(
                f"stream {self.name!r} produces {sorted(want)}; the model's features differ "
                f"(missing {missing}, unknown {extra}, other type {wrong})"
            )

    # -- the schedule ---------------------------------------------------------------

    @property
    def drift_points(self) -> list[int]:
        """Positions where the concept changes."""
        return [p for p, _ in self._schedule[1:]]

    def concept_at(self, position: int) -> int:
        active = self._schedule[0][1]
        for start, concept in self._schedule:
            if start <= position:
                active = concept
        return active

    def switch_to(self, concept: int) -> None:
        """Make `concept` active from the current position on."""
        self._check_concept(concept)
        self._schedule = [(p, c) for p, c in self._schedule if p < self.position]
        self._schedule.append((self.position, concept))

    def _check_concept(self, concept: int) -> None:
        if not 0 <= concept < self.n_concepts:
            raise ValueError(
                f"{self.name}: concept must be in [0, {self.n_concepts}), got {concept}"
            )

    # -- generation -----------------------------------------------------------------

    def take(self, n: int) -> Rows:
        """The next `n` rows (concept switches inside the block are honoured)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        start = self.position
        bounds = sorted(
            {start, start + n, *(p for p, _ in self._schedule if start < p < start + n)}
        )
        parts = []
        for lo, hi in pairwise(bounds):
            concept = self.concept_at(lo)
            numeric, categorical, labels = self._generate(hi - lo, concept)
            parts.append((numeric, categorical, labels, np.full(hi - lo, concept, np.int64)))
        self.position = start + n
        k, m = len(self.numeric_names), len(self.categorical_names)
        if not parts:
            parts.append(
                (np.zeros((0, k)), np.zeros((0, m), np.str_), np.zeros(0), np.zeros(0, np.int64))
            )
        numeric = np.concatenate([p[0] for p in parts]).reshape(n, k)
        categorical = np.concatenate([p[1] for p in parts]).reshape(n, m)
        labels = np.concatenate([p[2] for p in parts]).astype(np.float64)
        if self.noise and self.task == "classification":
            flip = self._rng.random(n) < self.noise
            labels[flip] = (labels[flip] + self._rng.integers(1, self.classes, flip.sum())) % (
                self.classes
            )
        return Rows(
            self.numeric_names,
            self.categorical_names,
            numeric.astype(np.float64),
            categorical.astype(np.str_) if m else np.zeros((n, 0), np.str_),
            labels,
            np.concatenate([p[3] for p in parts]),
            start,
        )

    @abstractmethod
    def _generate(self, n: int, concept: int) -> tuple[FloatArray, NDArray[np.str_], FloatArray]:
        """`n` rows of `concept`: numeric [n, k], categorical [n, m], labels [n]."""


class SEAStream(DriftingStream):
    """SEA concepts: x1, x2, x3 uniform in [0, 10]; label 1 when x1 + x2 <= theta."""

    name = "sea"
    THETAS: ClassVar[tuple[float, ...]] = (8.0, 9.0, 7.0, 9.5)
    n_concepts = len(THETAS)

    def contract(self) -> list[FeatureSpec]:
        return [FeatureSpec(name=f"x{i}", min=0.0, max=10.0) for i in (1, 2, 3)]

    def _generate(self, n: int, concept: int) -> tuple[FloatArray, NDArray[np.str_], FloatArray]:
        x = self._rng.uniform(0.0, 10.0, size=(n, 3))
        labels = (x[:, 0] + x[:, 1] <= self.THETAS[concept]).astype(np.float64)
        return x, np.zeros((n, 0), np.str_), labels


class HyperplaneStream(DriftingStream):
    """A rotating hyperplane in [0, 1]^d: label 1 when w.x >= sum(w) / 2.

    The weights move by `mag_change` per row (each direction flips with probability
    `sigma` per block), which is gradual drift; a concept switch draws new weights,
    which is abrupt drift.
    """

    name = "hyperplane"
    n_concepts = 16

    def __init__(
        self,
        seed: int = 0,
        schedule: Sequence[tuple[int, int]] = ((0, 0),),
        noise: float = 0.05,
        n_features: int = 10,
        mag_change: float = 0.0,
        sigma: float = 0.1,
    ) -> None:
        self.n_features = n_features
        self.mag_change = mag_change
        self.sigma = sigma
        concept_rng = np.random.default_rng([seed, 7])
        self._weights = concept_rng.random((self.n_concepts, n_features))
        self._directions = np.where(concept_rng.random((self.n_concepts, n_features)) < 0.5, -1, 1)
        super().__init__(seed, schedule, noise)

    def contract(self) -> list[FeatureSpec]:
        return [FeatureSpec(name=f"x{i}", min=0.0, max=1.0) for i in range(self.n_features)]

    def _generate(self, n: int, concept: int) -> tuple[FloatArray, NDArray[np.str_], FloatArray]:
        x = self._rng.random((n, self.n_features))
        w0, direction = self._weights[concept], self._directions[concept]
        steps = np.arange(1, n + 1, dtype=np.float64)[:, None] * self.mag_change * direction
        w = w0 + steps  # [n, d]: each row sees the plane as it has rotated so far
        labels = ((x * w).sum(axis=1) >= w.sum(axis=1) / 2).astype(np.float64)
        self._weights[concept] = w[-1] if n else w0
        flips = self._rng.random(self.n_features) < self.sigma
        self._directions[concept] = np.where(flips, -direction, direction)
        return x, np.zeros((n, 0), np.str_), labels


class CovariateShiftStream(DriftingStream):
    """One fixed rule, inputs from one segment at a time: only the inputs move.

    Segment `c` draws x1..x4 from a Gaussian around its own centre and names itself
    in the categorical feature `segment`. The rule ignores the segment:
    classification labels 1 when x2 > 1.5 sin(x1) + 0.3 x3; regression targets
    1.5 sin(x1) - x2 + 0.3 x3 x4 (+ noise). Its local shape differs from segment to
    segment, so a learner that only follows the newest segment forgets the others.
    """

    name = "covariate"
    CENTRES: ClassVar[tuple[tuple[float, float, float, float], ...]] = (
        (-1.5, -1.5, 0.0, 0.0),
        (1.5, 1.5, 0.5, 0.5),
        (-4.5, 1.5, -0.5, 1.0),
        (4.0, -1.0, 1.0, -0.5),
    )
    SEGMENTS: ClassVar[tuple[str, ...]] = ("north", "south", "east", "west")
    n_concepts = len(CENTRES)

    def __init__(
        self,
        seed: int = 0,
        schedule: Sequence[tuple[int, int]] = ((0, 0),),
        noise: float = 0.0,
        task: Task = "classification",
        spread: float = 1.0,
    ) -> None:
        self.task = task
        self.spread = spread
        super().__init__(seed, schedule, noise)

    def contract(self) -> list[FeatureSpec]:
        numeric = [FeatureSpec(name=f"x{i}") for i in (1, 2, 3, 4)]
        return [*numeric, FeatureSpec(name="segment", type="categorical", hash_buckets=8)]

    def _generate(self, n: int, concept: int) -> tuple[FloatArray, NDArray[np.str_], FloatArray]:
        centre = np.asarray(self.CENTRES[concept])
        x = centre + self.spread * self._rng.standard_normal((n, 4))
        segment = np.full((n, 1), self.SEGMENTS[concept])
        wave = 1.5 * np.sin(x[:, 0])
        if self.task == "classification":
            labels = (x[:, 1] > wave + 0.3 * x[:, 2]).astype(np.float64)
        else:
            labels = wave - x[:, 1] + 0.3 * x[:, 2] * x[:, 3]
            labels += self.noise * self._rng.standard_normal(n)
        return x, segment, labels


def _agrawal_functions() -> list[Callable[[dict[str, FloatArray]], NDArray[np.bool_]]]:
    """The ten labeling functions of Agrawal et al. (1993), vectorised; True = class 1."""

    def band(v: FloatArray, lo: float, hi: float) -> NDArray[np.bool_]:
        return (lo <= v) & (v <= hi)

    def by_age(
        c: dict[str, FloatArray],
        young: NDArray[np.bool_],
        mid: NDArray[np.bool_],
        old: NDArray[np.bool_],
    ) -> NDArray[np.bool_]:
        age = c["age"]
        return np.where(age < 40, young, np.where(age < 60, mid, old))

    def disposable(c: dict[str, FloatArray], extra: NDArray[Any]) -> NDArray[np.bool_]:
        income: FloatArray = 2 * (c["salary"] + c["commission"]) / 3
        return np.asarray(income + extra <= 1, dtype=np.bool_)

    def f9(c: dict[str, FloatArray]) -> NDArray[np.bool_]:
        equity = np.where(c["hyears"] >= 20, c["hvalue"] * (c["hyears"] - 20) / 10, 0.0)
        return disposable(c, -5000.0 * c["elevel"] + equity / 5 - 10000)

    s, e = "salary", "elevel"
    return [
        lambda c: (c["age"] < 40) | (c["age"] >= 60),
        lambda c: by_age(
            c, band(c[s], 5e4, 1e5), band(c[s], 7.5e4, 1.25e5), band(c[s], 2.5e4, 7.5e4)
        ),
        lambda c: by_age(c, band(c[e], 0, 1), band(c[e], 1, 3), band(c[e], 2, 4)),
        lambda c: by_age(
            c,
            np.where(band(c[e], 0, 1), band(c[s], 2.5e4, 7.5e4), band(c[s], 5e4, 1e5)),
            np.where(band(c[e], 1, 3), band(c[s], 5e4, 1e5), band(c[s], 7.5e4, 1.25e5)),
            np.where(band(c[e], 2, 4), band(c[s], 5e4, 1e5), band(c[s], 2.5e4, 7.5e4)),
        ),
        lambda c: by_age(
            c,
            np.where(band(c[s], 5e4, 1e5), band(c["loan"], 1e5, 3e5), band(c[s], 2e5, 4e5)),
            np.where(
                band(c[s], 7.5e4, 1.25e5), (c[s] >= 2e5) & (c["loan"] <= 4e5), band(c[s], 3e5, 5e5)
            ),
            np.where(
                band(c[s], 2.5e4, 7.5e4), band(c["loan"], 3e5, 5e5), band(c["loan"], 7.5e4, 3e5)
            ),
        ),
        lambda c: by_age(
            c,
            band(c[s] + c["commission"], 5e4, 1e5),
            band(c[s] + c["commission"], 7.5e4, 1.25e5),
            band(c[s] + c["commission"], 2.5e4, 7.5e4),
        ),
        lambda c: disposable(c, -c["loan"] / 5 - 20000),
        lambda c: disposable(c, -5000.0 * c[e] - 20000),
        lambda c: disposable(c, -5000.0 * c[e] - c["loan"] / 5 - 10000),
        f9,
    ]


class AgrawalStream(DriftingStream):
    """Loan applications; the concept is which of the ten functions labels them.

    `age_range` narrows the applicants' ages (a covariate shift: under functions
    that depend on age, a learner that only sees the new ages forgets the old ones).
    Education level, car maker and zip code are categorical features with a
    vocabulary; the other six are numeric.
    """

    name = "agrawal"
    n_concepts = 10
    _FUNCTIONS = _agrawal_functions()

    def __init__(
        self,
        seed: int = 0,
        schedule: Sequence[tuple[int, int]] = ((0, 0),),
        noise: float = 0.0,
        age_range: tuple[int, int] = (20, 80),
    ) -> None:
        self.age_range = age_range
        super().__init__(seed, schedule, noise)

    def contract(self) -> list[FeatureSpec]:
        numeric = ["salary", "commission", "age", "hvalue", "hyears", "loan"]
        vocab = {
            "elevel": [str(i) for i in range(5)],
            "car": [str(i) for i in range(1, 21)],
            "zipcode": [str(i) for i in range(9)],
        }
        return [FeatureSpec(name=n) for n in numeric] + [
            FeatureSpec(name=n, type="categorical", vocabulary=v) for n, v in vocab.items()
        ]

    def set_age_range(self, low: int, high: int) -> None:
        """Draw ages from [low, high] from now on (both ends included)."""
        if not 20 <= low <= high <= 80:
            raise ValueError(f"age range must lie within [20, 80], got [{low}, {high}]")
        self.age_range = (low, high)

    def _generate(self, n: int, concept: int) -> tuple[FloatArray, NDArray[np.str_], FloatArray]:
        rng = self._rng
        salary = 20000 + 130000 * rng.random(n)
        commission = np.where(salary >= 75000, 0.0, 10000 + 75000 * rng.random(n))
        age = rng.integers(self.age_range[0], self.age_range[1] + 1, n).astype(np.float64)
        elevel = rng.integers(0, 5, n)
        car = rng.integers(1, 21, n)
        zipcode = rng.integers(0, 9, n)
        hvalue = (8 - zipcode) * 100000 * (0.5 + rng.random(n))
        hyears = rng.integers(1, 31, n).astype(np.float64)
        loan = 500000 * rng.random(n)
        columns = {
            "salary": salary,
            "commission": commission,
            "age": age,
            "elevel": elevel.astype(np.float64),
            "hvalue": hvalue,
            "hyears": hyears,
            "loan": loan,
        }
        labels = self._FUNCTIONS[concept](columns).astype(np.float64)
        numeric = np.stack([salary, commission, age, hvalue, hyears, loan], axis=1)
        categorical = np.stack([elevel, car, zipcode], axis=1).astype(np.str_)
        return numeric, categorical, labels


STREAMS: dict[str, type[DriftingStream]] = {
    cls.name: cls for cls in (SEAStream, HyperplaneStream, CovariateShiftStream, AgrawalStream)
}


def make_stream(name: str, seed: int = 0, **options: Any) -> DriftingStream:
    """A stream by name (`sea`, `hyperplane`, `covariate`, `agrawal`)."""
    try:
        cls = STREAMS[name]
    except KeyError:
        raise ValueError(f"unknown stream {name!r}; choose one of {sorted(STREAMS)}") from None
    return cls(seed=seed, **options)


def every(period: int, concepts: Sequence[int], length: int) -> list[tuple[int, int]]:
    """A schedule cycling through `concepts`, switching every `period` rows up to `length`."""
    if period <= 0:
        raise ValueError(f"period must be > 0, got {period}")
    return [(p, concepts[i % len(concepts)]) for i, p in enumerate(range(0, length, period))]
