"""Feature dicts -> the two arrays of the model contract, the same way everywhere.

A model version's ONNX graph takes `numeric` (float32 [N, k], numeric features in
contract order) and `categorical` (string [N, m], categorical features in contract
order); see `driftline.api.artifacts`. The trainer builds these arrays from labeled
examples and reference files. What each value may be, and what the model sees for
it, is `driftline.common.feature_values`: a missing numeric value is NaN (the graph
imputes the training mean), a missing category is the empty text, and a value
that breaks the rules raises `FeatureValueError` naming the feature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import (
    FeatureValueError,
    category_value,
    first_invalid_cell,
    model_number,
    model_text,
    numeric_value,
    policy_value,
)

_NUMBER_TYPES = frozenset({float, int})
_NOT_LAYOUT = {"min", "max", "on_invalid"}
"""FeatureSpec fields that do not change the model's inputs' layout (not in the hash)."""


def _number(feature: FeatureSpec, raw: object) -> float:
    """The model's cell for a numeric value, after the feature's `onInvalid` policy."""
    return model_number(cast(float | None, policy_value(feature, raw)[0]))


@dataclass(frozen=True)
class FeatureLayout:
    """Column order of a feature contract and the row -> array conversion."""

    numeric: tuple[FeatureSpec, ...]
    categorical: tuple[FeatureSpec, ...]

    @classmethod
    def from_features(cls, features: Sequence[FeatureSpec]) -> FeatureLayout:
        return cls(
            tuple(f for f in features if f.type == "numeric"),
            tuple(f for f in features if f.type == "categorical"),
        )

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.numeric)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.categorical)

    def contract_hash(self) -> str:
        """sha256 of the contract: names, types, buckets and vocabularies, in order."""
        spec = [f.model_dump(mode="json", exclude=_NOT_LAYOUT) for f in self.numeric]
        spec += [f.model_dump(mode="json", exclude=_NOT_LAYOUT) for f in self.categorical]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    # -- rows -> arrays ---------------------------------------------------------------

    def numeric_array(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[np.float32]:
        """float32 [n, k]; raises FeatureValueError on the first value that does not fit."""
        k, n = len(self.numeric), len(rows)
        if k == 0:
            return np.zeros((n, 0), np.float32)
        names = self.numeric_names
        if any(f.on_invalid is not None for f in self.numeric):
            policed = [[_number(f, r.get(f.name)) for f in self.numeric] for r in rows]
            return np.array(policed, np.float32).reshape(n, k)
        getter = itemgetter(*names)
        try:
            raw = [getter(r) for r in rows]
        except KeyError:
            raw = None
        if raw is not None:
            # The fast path: every value present and a plain number (NaN is missing).
            cells = raw if k == 1 else chain.from_iterable(raw)
            if set(map(type, cells)) <= _NUMBER_TYPES:
                try:
                    with np.errstate(over="ignore"):  # beyond float32 is inf, refused below
                        values = np.array(raw, dtype=np.float32).reshape(n, k)
                except OverflowError:  # an int beyond float64: the slow path names it
                    values = None
                if values is not None:
                    bad = first_invalid_cell(values, required=False)
                    if bad is not None:
                        raise FeatureValueError(names[bad[1]], bad[2])
                    return values
        return np.array(
            [[model_number(numeric_value(name, r.get(name))) for name in names] for r in rows],
            np.float32,
        ).reshape(n, k)

    def categorical_array(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[np.object_]:
        """object (str) [n, m] of category texts."""
        m = len(self.categorical)
        out = np.empty((len(rows), m), dtype=object)
        for j, (name, feature) in enumerate(
            zip(self.categorical_names, self.categorical, strict=True)
        ):
            column = [r.get(name) for r in rows]
            if feature.on_invalid is not None:
                out[:, j] = [
                    model_text(cast(str | None, policy_value(feature, v)[0])) for v in column
                ]
            elif all(type(v) is str for v in column):
                out[:, j] = column
            else:
                out[:, j] = [model_text(category_value(name, v)) for v in column]
        return out

    def arrays(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        """(`numeric`, `categorical`) for the ONNX inputs of the same names."""
        return self.numeric_array(rows), self.categorical_array(rows)

    def check_row(self, row: Mapping[str, Any]) -> None:
        """Raise FeatureValueError if `row` does not fit (to find the bad rows of a batch)."""
        for feature in (*self.numeric, *self.categorical):
            policy_value(feature, row.get(feature.name))
