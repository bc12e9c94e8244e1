"""Categorical texts -> integer codes for training, as the exported graph computes them.

Serving feeds the raw category texts to the ONNX graph; the graph turns them into
codes with `com.microsoft.MurmurHash3` (hashBuckets) or `ai.onnx.ml.LabelEncoder`
(vocabulary) before the network sees them. The rule is
`driftline.common.feature_values.category_code` (a test checks that ONNX Runtime's
hash agrees); this module applies it to whole columns.

Hashing runs in Python, so each feature keeps a bounded cache of the codes it has
seen: real categorical features repeat, and a dict lookup is cheap.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import category_code

CACHE_LIMIT: Final = 100_000  # distinct values per feature kept; beyond that, code each time


class CategoricalCoder:
    """Codes of one categorical feature, computed the way the exported graph does."""

    def __init__(self, feature: FeatureSpec) -> None:
        self.feature = feature
        self.width = feature.width
        vocabulary = feature.vocabulary or []
        self._cache: dict[str, int] = {v: category_code(feature, v) for v in vocabulary}

    def code(self, text: str) -> int:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        value = category_code(self.feature, text)
        if len(self._cache) < CACHE_LIMIT:
            self._cache[text] = value
        return value

    def codes(self, texts: NDArray[np.object_]) -> NDArray[np.int64]:
        return np.fromiter(map(self.code, texts), dtype=np.int64, count=len(texts))


class CategoricalEncoder:
    """Codes of all categorical features of a contract: object [n, m] -> int64 [n, m]."""

    def __init__(self, features: tuple[FeatureSpec, ...]) -> None:
        self.coders = [CategoricalCoder(f) for f in features]

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(c.width for c in self.coders)

    def __call__(self, categorical: NDArray[np.object_]) -> NDArray[np.int64]:
        n = categorical.shape[0]
        out = np.empty((n, len(self.coders)), dtype=np.int64)
        for j, coder in enumerate(self.coders):
            out[:, j] = coder.codes(categorical[:, j])
        return out
