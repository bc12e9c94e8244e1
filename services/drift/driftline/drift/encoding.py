"""Live feature values as arrays the detectors read, with data-quality counts on the way.

Numeric features become one float column each, NaN where a value is missing (absent,
null, not a number). Categorical features become integer codes: the categories seen
in the reference are 0..K-1 and every other value shares code K ("unseen"), which
keeps memory bounded whatever clients send and makes a new category count as drift
in the Chi-squared test (the reference has none of it). Missing categorical values
are -1.

Data quality is counted in the same pass, per feature: missing values, numeric values
outside the contract's `min`/`max`, and categories outside the contract's vocabulary
(or, for hashed features, never seen in the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from driftline.api.events import Features
from driftline.api.spec import FeatureSpec
from driftline.drift.detectors.base import FloatArray, IntArray
from driftline.drift.reference import Reference, category_text, finite

MISSING = "missing"
OUT_OF_RANGE = "out_of_range"
UNSEEN = "unseen_category"
CHECKS = (MISSING, OUT_OF_RANGE, UNSEEN)


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
        vocab, unseen = self.vocab[name], len(self.vocab[name])
        return np.array(
            [-1 if v is None else vocab.get(category_text(v), unseen) for v in values],
            dtype=np.int64,
        )

    def encode(self, rows: Sequence[Features]) -> Encoded:
        issues: dict[tuple[str, str], int] = {}
        numeric = np.full((len(rows), len(self.numeric)), np.nan)
        for j, f in enumerate(self.numeric):
            column = [finite(r.get(f.name)) for r in rows]
            values = np.array([np.nan if v is None else v for v in column], dtype=np.float64)
            numeric[:, j] = values
            missing = int(np.isnan(values).sum())
            low = f.min if f.min is not None else -np.inf
            high = f.max if f.max is not None else np.inf
            with np.errstate(invalid="ignore"):
                outside = int(((values < low) | (values > high)).sum())
            _count(issues, f.name, MISSING, missing)
            _count(issues, f.name, OUT_OF_RANGE, outside)
        codes = np.full((len(rows), len(self.categorical)), -1, dtype=np.int64)
        for j, f in enumerate(self.categorical):
            raw = [r.get(f.name) for r in rows]
            codes[:, j] = self.codes_of(f.name, raw)
            allowed = self.allowed[f.name]
            unseen = sum(1 for v in raw if v is not None and category_text(v) not in allowed)
            _count(issues, f.name, MISSING, int((codes[:, j] < 0).sum()))
            _count(issues, f.name, UNSEEN, unseen)
        return Encoded(numeric, codes, issues)


def _count(issues: dict[tuple[str, str], int], feature: str, check: str, n: int) -> None:
    issues[(feature, check)] = issues.get((feature, check), 0) + n
