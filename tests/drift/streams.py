"""Synthetic models, references and event streams for the drift monitor's tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.api import DynamicModel, parse_dynamic_model
from driftline.api.artifacts import REFERENCE_OUTPUT_KEY
from driftline.api.events import LabeledExample, Prediction
from driftline.drift.reference import Reference, parse_reference

NUMERIC = ["x1", "x2", "x3"]
COLORS = ["red", "green", "blue"]


def dynamic_model(
    name: str = "sea",
    *,
    drift: dict[str, Any] | None = None,
    task: str = "classification",
    endpoints: dict[str, str] | None = None,
    topics: dict[str, str] | None = None,
    namespace: str = "test",
) -> DynamicModel:
    ep = endpoints or {}
    kafka: dict[str, Any] = {"bootstrapServers": ep.get("kafka", "127.0.0.1:9092"), "partitions": 1}
    if topics:
        kafka["topics"] = topics
    return parse_dynamic_model(
        {
            "apiVersion": "driftline.io/v1alpha1",
            "kind": "DynamicModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "model": {
                    "registry": {
                        "trackingUri": ep.get("mlflow", "http://127.0.0.1:5000"),
                        "name": name,
                    },
                    "task": task,
                },
                "features": [
                    {"name": "x1", "min": -10, "max": 10},
                    {"name": "x2"},
                    {"name": "x3"},
                    {"name": "color", "type": "categorical", "vocabulary": COLORS},
                ],
                "kafka": kafka,
                "redis": {"url": ep.get("redis", "redis://127.0.0.1:6379/0")},
                "drift": {"window": 400, "pValue": 0.01, "cooldownSeconds": 600, **(drift or {})},
            },
        }
    )


def rule(x: np.ndarray, concept: int = 0) -> np.ndarray:
    """The labeling rule: concept 0 or a switched concept 1 (same inputs, other labels)."""
    if concept == 0:
        return (x[:, 0] + x[:, 1] > 0).astype(np.float64)
    return (x[:, 0] - x[:, 1] > 0).astype(np.float64)


def draw(
    rng: np.random.Generator, n: int, shift: dict[str, float] | None = None
) -> dict[str, np.ndarray]:
    shift = shift or {}
    cols: dict[str, np.ndarray] = {f: rng.normal(size=n) + shift.get(f, 0.0) for f in NUMERIC}
    cols["color"] = rng.choice(COLORS, size=n, p=[0.5, 0.3, 0.2])
    return cols


def reference_arrays(rng: np.random.Generator, n: int = 2000) -> dict[str, np.ndarray]:
    cols = draw(rng, n)
    x = np.column_stack([cols[f] for f in NUMERIC])
    return {**cols, REFERENCE_OUTPUT_KEY: rule(x)}


def reference(rng: np.random.Generator, version: str = "1", n: int = 2000) -> Reference:
    return parse_reference(reference_arrays(rng, n), dynamic_model().spec.features, version)


def predictions(
    rng: np.random.Generator,
    n: int,
    *,
    version: str = "1",
    shift: dict[str, float] | None = None,
    variant: str = "stable",
    start: int = 0,
) -> list[Prediction]:
    cols = draw(rng, n, shift)
    x = np.column_stack([cols[f] for f in NUMERIC])
    out = rule(x)
    return [
        Prediction(
            request_id=f"r{start + i}",
            model="sea",
            model_version=version,
            variant=variant,  # type: ignore[arg-type]
            features={**{f: float(cols[f][i]) for f in NUMERIC}, "color": str(cols["color"][i])},
            output=float(out[i]),
            ts=1000.0 + start + i,
        )
        for i in range(n)
    ]


def labeled(
    rng: np.random.Generator,
    n: int,
    *,
    concept: int = 0,
    noise: float = 0.1,
    version: str = "1",
    start: int = 0,
) -> list[LabeledExample]:
    """The serving model predicts with concept 0; labels follow `concept`, with noise."""
    cols = draw(rng, n)
    x = np.column_stack([cols[f] for f in NUMERIC])
    out = rule(x, 0)
    label = rule(x, concept)
    flip = rng.random(n) < noise
    label[flip] = 1 - label[flip]
    return [
        LabeledExample(
            request_id=f"l{start + i}",
            model="sea",
            model_version=version,
            variant="stable",
            features={f: float(cols[f][i]) for f in NUMERIC},
            label=float(label[i]),
            output=float(out[i]),
            ts_prediction=1000.0 + start + i,
            ts_label=1001.0 + start + i,
        )
        for i in range(n)
    ]
