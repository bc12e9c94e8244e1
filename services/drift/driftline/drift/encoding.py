"""Live feature values as arrays the detectors read, with data-quality counts on the way.

Values are read by the platform's one rule set (`driftline.common.feature_values`),
so a value means here what it meant to serving and training. Numeric features become
one float column each, NaN where a value is missing (absent, null, NaN) or invalid.
Categorical features become integer codes: the categories seen in the reference are
0..K-1 and every other value shares code K ("unseen"), which keeps memory bounded
whatever clients send and makes a new category count as drift in the Chi-squared
test (the reference has none of it). Missing or invalid categorical values are -1.

Data quality is counted in the same pass, per feature: missing values, values the
rules refuse (serving would have answered 422: a producer wrote them past it),
numeric values outside the contract's `min`/`max`, and categories outside the
contract's vocabulary (or, for hashed features, never seen in the reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from driftline.api.events import Features
from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import (
    FeatureValueError,
    category_value,
    numeric_value,
    out_of_range,
    policy_value,
)
from driftline.drift.detectors.base import FloatArray, IntArray
from driftline.drift.reference import Reference

MISSING = "missing"
INVALID = "invalid_value"
OUT_OF_RANGE = "out_of_range"
UNSEEN = "unseen_category"
CHECKS = (MISSING, INVALID, OUT_OF_RANGE, UNSEEN)

T = TypeVar("T", float, str)


@dataclass
class Encoded:
    """One batch of rows: numeric (rows, numeric features), codes (rows, categorical features)."""

    numeric: FloatArray
    codes: IntArray
    issues: dict[tuple[str, str], int] = field(default_factory=dict)
    """(feature, check) -> rows of this batch with that problem."""


class FeatureEncoder:
    """Encodes feature dicts in the contract's order against one reference."""

    def __init__(self, features: list[FeatureSpec], reference: Reference) -> None:
        self.numeric = [f for f in features if f.type == "numeric"]
        self.categorical = [f for f in features if f.type == "categorical"]
        self.vocab: dict[str, dict[str, int]] = {}
        self.allowed: dict[str, set[str]] = {}
        for f in self.categorical:
            seen = sorted(set(reference.categorical[f.name].tolist()))
            self.vocab[f.name] = {c: i for i, c in enumerate(seen)}
            self.allowed[f.name] = set(f.vocabulary) if f.vocabulary is not None else set(seen)
        self.reference_numeric = {f.name: reference.numeric[f.name] for f in self.numeric}
        matrix = (
            np.column_stack([reference.numeric[f.name] for f in self.numeric])
            if self.numeric
            else np.empty((reference.rows, 0))
        )
        self.reference_rows: FloatArray = matrix[np.isfinite(matrix).all(axis=1)]
        """Reference rows with every numeric feature present (the online detectors' input)."""
        self.reference_codes = {
            f.name: self.codes_of(f.name, reference.categorical[f.name].tolist())
            for f in self.categorical
        }

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.numeric]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]

    def unseen_code(self, name: str) -> int:
        return len(self.vocab[name])

    def categories(self, name: str) -> list[int]:
        """The codes the reference holds (what the Chi-squared test starts from)."""
        return sorted(set(self.reference_codes[name].tolist()))

    def codes_of(self, name: str, values: Sequence[object]) -> IntArray:
        """Codes of raw values (-1: missing or invalid)."""
        texts, _ = canonical(category_value, name, values)
        return self._codes(name, texts)

    def _codes(self, name: str, texts: Sequence[str | None]) -> IntArray:
        vocab, unseen = self.vocab[name], len(self.vocab[name])
        return np.array([-1 if t is None else vocab.get(t, unseen) for t in texts], dtype=np.int64)

    def encode(self, rows: Sequence[Features]) -> Encoded:
        issues: dict[tuple[str, str], int] = {}
        numeric = np.full((len(rows), len(self.numeric)), np.nan)
        for j, f in enumerate(self.numeric):
            column, invalid = canonical(
                _reader(f, numeric_value), f.name, [r.get(f.name) for r in rows]
            )
            values = np.array([np.nan if v is None else v for v in column], dtype=np.float64)
            numeric[:, j] = values
            outside = sum(1 for v in column if v is not None and out_of_range(f, v))
            _count(issues, f.name, MISSING, int(np.isnan(values).sum()) - invalid)
            _count(issues, f.name, INVALID, invalid)
            _count(issues, f.name, OUT_OF_RANGE, outside)
        codes = np.full((len(rows), len(self.categorical)), -1, dtype=np.int64)
        for j, f in enumerate(self.categorical):
            texts, invalid = canonical(
                _reader(f, category_value), f.name, [r.get(f.name) for r in rows]
            )
            codes[:, j] = self._codes(f.name, texts)
            allowed = self.allowed[f.name]
            unseen = sum(1 for t in texts if t is not None and t not in allowed)
            _count(issues, f.name, MISSING, int((codes[:, j] < 0).sum()) - invalid)
            _count(issues, f.name, INVALID, invalid)
            _count(issues, f.name, UNSEEN, unseen)
        return Encoded(numeric, codes, issues)


def _reader(
    feature: FeatureSpec, parse: Callable[[str, object], T | None]
) -> Callable[[str, object], T | None]:
    """The rules' reader of `feature`'s values, through its `onInvalid` policy if it has one
    (serving and training apply the same one: `feature_values.apply_policy`)."""
    if feature.on_invalid is None:
        return parse
    return lambda _name, raw: policy_value(feature, raw)[0]  # type: ignore[return-value]


def canonical(
    parse: Callable[[str, object], T | None], name: str, raw: Sequence[object]
) -> tuple[list[T | None], int]:
    """Canonical values of one feature's column (None: missing or invalid), and how many
    were invalid. Logged events are past the request path, so a bad value is counted
    here, not raised."""
    out: list[T | None] = []
    invalid = 0
    for value in raw:
        try:
            out.append(parse(name, value))
        except FeatureValueError:
            out.append(None)
            invalid += 1
    return out, invalid


def _count(issues: dict[tuple[str, str], int], feature: str, check: str, n: int) -> None:
    issues[(feature, check)] = issues.get((feature, check), 0) + n
