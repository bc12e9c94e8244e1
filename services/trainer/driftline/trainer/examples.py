"""Labeled examples as columns, the unit every other trainer module works on.

Decoding turns a Kafka batch into one `Examples`; the learner splits it into
training rows and held-out rows, the buffers store its rows, the gate scores on
it. Columns (numpy) rather than objects, because the trainer handles hundreds of
thousands of rows per second and per-row Python objects would be the bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Examples:
    numeric: NDArray[np.float32]
    """Raw numeric features [n, k] in contract order (NaN = missing)."""
    categorical: NDArray[np.object_]
    """Raw category texts [n, m] in contract order."""
    codes: NDArray[np.int64]
    """Categorical codes [n, m], as the exported graph computes them."""
    labels: NDArray[np.float32]
    """Class index (classification) or target (regression)."""
    key: NDArray[np.int64]
    """Stable identity of the row (partition and offset): decides the held-out split."""
    served: NDArray[np.float32]
    """What the stable version served for the row (NaN if not a stable prediction)."""
    ts: NDArray[np.float64]
    """When the label arrived (seconds since the epoch)."""
    weight: NDArray[np.float32]
    """Loss weight: the clipped inverse propensity with exploration on
    (`ips_weights`), else 1."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: NDArray[Any] | slice) -> Examples:
        return Examples(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[Examples]) -> Examples:
        return Examples(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(Examples)
            }
        )

    @staticmethod
    def empty(k: int, m: int) -> Examples:
        return Examples(
            numeric=np.zeros((0, k), np.float32),
            categorical=np.zeros((0, m), object),
            codes=np.zeros((0, m), np.int64),
            labels=np.zeros(0, np.float32),
            key=np.zeros(0, np.int64),
            served=np.zeros(0, np.float32),
            ts=np.zeros(0, np.float64),
            weight=np.zeros(0, np.float32),
        )


def holdout_mask(key: NDArray[np.int64], fraction: float) -> NDArray[np.bool_]:
    """Which rows are held out from training: a hash of the row key below `fraction`.

    A hash (splitmix64) rather than a random draw, so a restarted trainer that reads
    the same records again holds out the same ones.
    """
    z = key.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    threshold = np.uint64(int(fraction * 2**53))
    return (z >> np.uint64(11)) < threshold


def ips_weights(propensity: NDArray[np.float64], max_weight: float) -> NDArray[np.float32]:
    """Inverse-propensity loss weights, clipped at `max_weight` (a row the logging policy
    rarely serves would otherwise outweigh whole batches). NaN (no propensity logged:
    an example from before exploration was on) weighs 1. The learner divides each
    batch's weighted loss by the sum of its weights (self-normalized), so only the
    weights' ratios matter."""
    w = np.minimum(1.0 / np.clip(propensity, 1e-9, None), max_weight)
    return np.where(np.isnan(propensity), 1.0, w).astype(np.float32)
