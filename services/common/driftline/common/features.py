"""Feature dicts -> the two arrays of the model contract, the same way everywhere.

A model version's ONNX graph takes `numeric` (float32 [N, k], numeric features in
contract order) and `categorical` (string [N, m], categorical features in contract
order); see `driftline.api.artifacts`. The trainer builds these arrays from labeled
examples, serving from requests and the drift monitor from the prediction log. If
two parts turned the same dict into different arrays the model would see skewed
inputs, so the rules live here once:

- a missing or null numeric feature is NaN (the graph imputes the training mean);
- a missing or null categorical feature is the empty string (its own bucket);
- a number given for a categorical feature is written as text, integers without
  a fraction (`5.0` -> `"5"`), so `zipcode: 5` and `zipcode: "5"` are one category;
- a numeric feature accepts numbers, booleans (1/0) and text that reads as a
  number (`"1.5"`); anything else, and infinite numbers, are errors naming the feature.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.api.spec import FeatureSpec

FeatureValue = float | int | str | bool | None


class FeatureError(ValueError):
    """A row whose features do not fit the contract; `field` names the feature."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"feature {field!r}: {message}")


def categorical_text(value: FeatureValue) -> str:
    """The category a value stands for (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    raise TypeError(f"not a feature value: {type(value).__name__}")


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
        spec = [f.model_dump(mode="json", exclude={"min", "max"}) for f in self.numeric]
        spec += [f.model_dump(mode="json", exclude={"min", "max"}) for f in self.categorical]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    # -- rows -> arrays ---------------------------------------------------------------

    def numeric_array(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[np.float32]:
        """float32 [n, k]; raises FeatureError on the first row that does not fit."""
        k = len(self.numeric)
        if k == 0:
            return np.zeros((len(rows), 0), np.float32)
        getter = itemgetter(*self.numeric_names)
        try:
            # The fast path: every row has every numeric feature as a number or null.
            values = np.array([getter(r) for r in rows], dtype=np.float32).reshape(len(rows), k)
        except (KeyError, TypeError, ValueError):
            values = np.array([self.numeric_row(r) for r in rows], np.float32).reshape(-1, k)
        if np.isinf(values).any():
            column = int(np.nonzero(np.isinf(values).any(axis=0))[0][0])
            raise FeatureError(self.numeric_names[column], "must be a finite number")
        return values

    def numeric_row(self, row: Mapping[str, Any]) -> list[float]:
        out: list[float] = []
        for name in self.numeric_names:
            value = row.get(name)
            if value is None:
                out.append(math.nan)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise FeatureError(name, f"must be a number or null, got {value!r:.40}") from None
            if math.isinf(number):
                raise FeatureError(name, "must be a finite number")
            out.append(number)
        return out

    def categorical_array(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[np.object_]:
        """object (str) [n, m] of category texts."""
        m = len(self.categorical)
        out = np.empty((len(rows), m), dtype=object)
        for j, name in enumerate(self.categorical_names):
            column = [r.get(name) for r in rows]
            if all(type(v) is str for v in column):
                out[:, j] = column
            else:
                try:
                    out[:, j] = [categorical_text(v) for v in column]
                except TypeError as exc:
                    raise FeatureError(name, str(exc)) from exc
        return out

    def arrays(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        """(`numeric`, `categorical`) for the ONNX inputs of the same names."""
        return self.numeric_array(rows), self.categorical_array(rows)

    def check_row(self, row: Mapping[str, Any]) -> None:
        """Raise FeatureError if `row` does not fit (used to find the bad rows of a batch)."""
        self.numeric_row(row)
        for name in self.categorical_names:
            try:
                categorical_text(row.get(name))
            except TypeError as exc:
                raise FeatureError(name, str(exc)) from exc
