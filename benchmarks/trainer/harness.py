"""River's drift generators fed to Driftline's learner and to River's own models.

The quality benchmarks run the trainer's `OnlineLearner` exactly as the worker
does (blocks of rows, each labeled with what the serving model predicted for
it), without Kafka and MLflow, so that thousands of rows per second and several
learners fit in a few minutes on a shared machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.api.spec import FeatureSpec, ModelSpec, TrainingSpec
from driftline.trainer.examples import Examples
from driftline.trainer.learner import LearnerOptions, OnlineLearner

BLOCK = 256  # rows served, then learned, at a time (one default batch)


@dataclass
class Data:
    """Rows of a River generator in the contract's two arrays, plus the labels."""

    numeric: NDArray[np.float32]
    categorical: NDArray[np.object_]
    labels: NDArray[np.float32]
    dicts: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def part(self, lo: int, hi: int) -> Data:
        return Data(
            self.numeric[lo:hi], self.categorical[lo:hi], self.labels[lo:hi], self.dicts[lo:hi]
        )

    @staticmethod
    def concat(parts: list[Data]) -> Data:
        return Data(
            np.concatenate([p.numeric for p in parts]),
            np.concatenate([p.categorical for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [d for p in parts for d in p.dicts],
        )


@dataclass(frozen=True)
class Contract:
    numeric: tuple[str, ...]
    categorical: dict[str, list[str]]  # name -> vocabulary

    def features(self) -> list[FeatureSpec]:
        out = [FeatureSpec(name=n) for n in self.numeric]
        return out + [
            FeatureSpec(name=n, type="categorical", vocabulary=v)
            for n, v in self.categorical.items()
        ]

    def data(self, pairs: list[tuple[dict[Any, Any], Any]]) -> Data:
        # River numbers SEA's and Hyperplane's features 0, 1, ...: feature names need letters.
        dicts = [
            {(f"x{k}" if isinstance(k, int) else k): v for k, v in x.items()} for x, _ in pairs
        ]
        numeric = np.array([[d[n] for n in self.numeric] for d in dicts], np.float32)
        categorical = np.array(
            [[str(d[n]) for n in self.categorical] for d in dicts], dtype=object
        ).reshape(len(dicts), len(self.categorical))
        labels = np.array([float(y) for _, y in pairs], np.float32)
        return Data(numeric, categorical, labels, dicts)


SEA = Contract(("x0", "x1", "x2"), {})
HYPERPLANE = Contract(tuple(f"x{i}" for i in range(10)), {})
AGRAWAL = Contract(
    ("salary", "commission", "age", "hvalue", "hyears", "loan"),
    {
        "elevel": [str(i) for i in range(5)],
        "car": [str(i) for i in range(1, 21)],
        "zipcode": [str(i) for i in range(9)],
    },
)


def model_spec(**fields: Any) -> ModelSpec:
    """The spec's default learner: MLP [64, 32], learning rate 0.01 (`fields`: task, classes)."""
    return ModelSpec.model_validate(
        {"registry": {"trackingUri": "http://x", "name": "bench"}, **fields}
    )


def learner(
    contract: Contract, seed: int = 0, spec: ModelSpec | None = None, **options: Any
) -> OnlineLearner:
    """A learner with the spec's defaults (batch 256, replay 0.5, EWC 50), then `options`."""
    spec = spec or model_spec()
    base = LearnerOptions.from_spec(spec, TrainingSpec(), seed=seed)
    return OnlineLearner(spec, contract.features(), replace(base, **options))


def plain_sgd(contract: Contract, seed: int = 0) -> OnlineLearner:
    """The same network and optimizer, nothing against forgetting, no concept epochs."""
    return learner(contract, seed, replay_fraction=0.0, ewc_lambda=0.0, detect_concept=False)


def examples(
    model: OnlineLearner, data: Data, start: int, served: NDArray[np.float32] | None = None
) -> Examples:
    return model.examples(
        data.numeric, data.categorical, data.labels, np.arange(start, start + len(data)), served
    )


def bootstrap(model: OnlineLearner, data: Data, passes: int = 5) -> None:
    ex = examples(model, data, 0)
    model.observe(ex)
    model.fit_offline(ex, passes)
    model.refresh_ewc()


def blocks(n: int, size: int = BLOCK) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(lo + size, n)


def prequential(
    model: OnlineLearner,
    data: Data,
    start: int,
    learn: bool = True,
    events: dict[int, int] | None = None,
) -> NDArray[np.bool_]:
    """Test-then-train over `data`; True where the prediction was right.

    The served output of each row is the model's own prediction (the stable
    version, promoted continuously), which is what the concept check watches.
    `events` maps a row index to the first row of a concept change: at that row a
    concept drift event arrives, as the drift monitor would send it.
    """
    return served_outputs(model, data, start, learn, events) == data.labels


def served_outputs(
    model: OnlineLearner,
    data: Data,
    start: int,
    learn: bool = True,
    events: dict[int, int] | None = None,
    block: int = BLOCK,
) -> NDArray[np.float32]:
    """Test-then-train over `data`; the served output (class or value) of each row."""
    outputs = np.zeros(len(data), np.float32)
    pending = dict(events or {})
    for lo, hi in blocks(len(data), block):
        part = data.part(lo, hi)
        ex = examples(model, part, start + lo)
        predicted = predict(model, ex)
        outputs[lo:hi] = predicted
        if not learn:
            continue
        for at in [a for a in pending if a < hi]:
            model.open_epoch("drift event", from_seq=model.seq - (lo - pending.pop(at)))
        model.learn(examples(model, part, start + lo, predicted))
    return outputs


def predict(model: OnlineLearner, ex: Examples) -> NDArray[np.float32]:
    """The class (classification) or the value (regression) the model serves."""
    out = model.predict(ex.numeric, ex.codes)
    if model.task == "regression":
        return out.astype(np.float32)
    return out.argmax(axis=1).astype(np.float32)


def river_prequential(model: Any, data: Data) -> NDArray[np.bool_]:
    correct = np.zeros(len(data), np.bool_)
    for i, (x, y) in enumerate(zip(data.dicts, data.labels.tolist(), strict=True)):
        correct[i] = model.predict_one(x) == int(y)
        model.learn_one(x, int(y))
    return correct


def accuracy(model: OnlineLearner, data: Data) -> float:
    return float(np.mean(predict(model, examples(model, data, 10**9)) == data.labels))
