"""Categorical texts -> integer codes, in training and inside the exported graph.

Serving feeds the raw category texts to the ONNX graph; the graph turns them into
codes with `com.microsoft.MurmurHash3` (hashBuckets) or `ai.onnx.ml.LabelEncoder`
(vocabulary) before the network sees them. Training must produce the very same
codes, so this module holds both sides of that one rule:

- hashed: MurmurHash3 x86_32 of the UTF-8 bytes, seed 0, as unsigned, modulo the
  bucket count (what ONNX Runtime's contrib op computes; a test checks both agree);
- vocabulary: the position in the vocabulary; anything else is one extra slot.

Hashing runs in Python here, so each feature keeps a bounded cache of the codes
it has seen: real categorical features repeat, and a dict lookup is cheap.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from driftline.api.spec import DEFAULT_HASH_BUCKETS, FeatureSpec

HASH_SEED: Final = 0
CACHE_LIMIT: Final = 100_000  # distinct values per feature kept; beyond that, hash each time

_C1: Final = 0xCC9E2D51
_C2: Final = 0x1B873593
_MASK: Final = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = HASH_SEED) -> int:
    """MurmurHash3 x86_32 (Appleby), unsigned."""
    h = seed & _MASK
    n = len(data)
    whole = n - n % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _C1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        h ^= (k * _C2) & _MASK
        h = ((h << 13) | (h >> 19)) & _MASK
        h = (h * 5 + 0xE6546B64) & _MASK
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * _C1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        h ^= (k * _C2) & _MASK
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


class CategoricalCoder:
    """Codes of one categorical feature, computed the way the exported graph does."""

    def __init__(self, feature: FeatureSpec) -> None:
        self.feature = feature
        self.width = feature.width
        self._cache: dict[str, int] = {}
        if feature.vocabulary is not None:
            self._cache = {v: i for i, v in enumerate(feature.vocabulary)}
            self._unknown = len(feature.vocabulary)
            self._buckets = 0
        else:
            self._buckets = feature.hash_buckets or DEFAULT_HASH_BUCKETS

    def code(self, text: str) -> int:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        if self._buckets == 0:
            return self._unknown
        value = murmur3_32(text.encode("utf-8")) % self._buckets
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
