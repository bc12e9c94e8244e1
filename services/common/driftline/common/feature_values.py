"""What a valid value of a feature is, and what the model sees for it: the one rule set.

Serving validates requests by these rules (a 422 names the feature), the trainer
builds its arrays by them and the drift monitor reads logged values by them; the
exported ONNX graph computes the same category codes (`category_code`). A value that
serving accepts therefore encodes the same way in training and in drift.

A numeric feature (the model sees float32):

- a number, integer or float, finite and within float32 range, is the value itself;
- a boolean is an error, and so is text, even text that reads as a number (`"3.5"`):
  requests are JSON, which has numbers, and serving has always refused both;
- `Infinity`, and a number that is infinite once cast to float32 (beyond about
  3.4e38), is an error;
- `min` and `max` of the spec are expectations, not limits: values outside them are
  valid (the drift monitor counts them).

A categorical feature (the model sees text, then a code):

- text is the category, verbatim: `"True"` and `"true"` are two categories, `""` is one;
- an integer is its decimal text, so `zip: 5` and `zip: "5"` are one category;
- a float (also `5.0`) or a boolean is an error: serving has always refused them, and
  `5.0` -> `"5"` would let `5.5` become a category no client can send;
- a value outside the vocabulary is valid: its code is the out-of-vocabulary slot
  (hashed features have no vocabulary: every text hashes to a bucket).

Missing is absent, null or NaN, for either type. A request must carry every feature
(`required_value`: serving answers 422 "is missing"); data the platform already holds
may have gaps: training feeds NaN (the graph imputes the training mean) or the empty
text, and the drift monitor counts the value as missing.

A feature's `onInvalid` policy (`apply_policy`) decides, the same way in serving,
training and drift, what happens to a valid value outside `min`/`max` or the
vocabulary (refuse, clip, impute, flag) and to a missing one (refuse, impute, flag).
Values the rules above refuse stay refused: a policy covers values, not types.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from driftline.api.spec import DEFAULT_HASH_BUCKETS, FeatureSpec

Value = float | str | None
"""A canonical feature value: float (numeric), str (categorical), None (missing)."""

FLOAT32_LIMIT: Final = 2.0**128 * (1 - 2.0**-25)
"""The smallest magnitude that float32 rounds to infinity (max float32 plus half an ulp)."""

MISSING_TEXT: Final = ""
"""What the model's `categorical` input holds for a missing categorical value."""

HASH_SEED: Final = 0

IS_MISSING: Final = "is missing"
NOT_FINITE: Final = "must be a finite number within float32 range"

WIRE_TYPES: Final[dict[str, Any]] = {"numeric": float, "categorical": str | int}
"""The msgspec types a JSON decoder gives each feature type: they refuse in one C pass
what `required_value` refuses (text or booleans for numbers; floats, booleans or null
for categories), except the float32 range, which `first_invalid_cell` checks after the
cast. The table-driven tests hold the two to the same answers."""


class FeatureValueError(ValueError):
    """A value that does not fit its feature; `feature` names it, `reason` says why."""

    def __init__(self, feature: str, reason: str) -> None:
        self.feature = feature
        self.reason = reason
        super().__init__(f"feature {feature!r}: {reason}")


def describe(raw: object) -> str:
    """How an error message shows a refused value."""
    if isinstance(raw, bool | np.bool_):
        return f"the boolean {str(bool(raw)).lower()}"
    if isinstance(raw, str):
        return f"the text {raw!r:.40}"
    if isinstance(raw, float | np.floating):
        return f"the float {float(raw)!r}"
    return f"a {type(raw).__name__}"


def numeric_value(name: str, raw: object) -> float | None:
    """The canonical value of numeric feature `name` (None: missing), or FeatureValueError."""
    kind = type(raw)
    if kind is float or kind is int or isinstance(raw, np.floating | np.integer):
        try:
            number = float(raw)  # type: ignore[arg-type]
        except OverflowError:  # an int beyond float64
            raise FeatureValueError(name, NOT_FINITE) from None
        if number != number:  # NaN: how numpy and pandas write "missing"
            return None
        if -FLOAT32_LIMIT < number < FLOAT32_LIMIT:
            return number
        raise FeatureValueError(name, NOT_FINITE)
    if raw is None:
        return None
    raise FeatureValueError(name, f"must be a number, got {describe(raw)}")


def category_value(name: str, raw: object) -> str | None:
    """The canonical value of categorical feature `name` (None: missing), or FeatureValueError."""
    kind = type(raw)
    if kind is str:
        return raw  # type: ignore[return-value]
    if kind is int or isinstance(raw, np.integer):
        return str(int(raw))  # type: ignore[call-overload]
    if raw is None:
        return None
    if isinstance(raw, str):  # numpy's str_ and other subclasses
        return str(raw)
    if isinstance(raw, float | np.floating) and raw != raw:
        return None
    raise FeatureValueError(name, f"must be text or an integer, got {describe(raw)}")


def value(feature: FeatureSpec, raw: object) -> Value:
    """The canonical value of `raw` for `feature`: float, str, or None when missing."""
    if feature.type == "numeric":
        return numeric_value(feature.name, raw)
    return category_value(feature.name, raw)


def required_value(feature: FeatureSpec, raw: object) -> float | str:
    """`value`, where missing is an error too (a request must carry every feature)."""
    canonical = value(feature, raw)
    if canonical is None:
        raise FeatureValueError(feature.name, IS_MISSING)
    return canonical


# --- onInvalid policies -------------------------------------------------------------------

CLIP: Final = "clip"
IMPUTE: Final = "impute"
FLAG: Final = "flag"
ACTIONS: Final = (CLIP, IMPUTE, FLAG)
"""What a policy may do to a value it lets through (the prediction log's `flags`)."""


def out_of_range(feature: FeatureSpec, canonical: Value) -> bool:
    """Whether a valid value lies outside the feature's `min`/`max` or vocabulary."""
    if canonical is None:
        return False
    if type(canonical) is float:
        return (feature.min is not None and canonical < feature.min) or (
            feature.max is not None and canonical > feature.max
        )
    return feature.vocabulary is not None and canonical not in feature.vocabulary


def apply_policy(feature: FeatureSpec, canonical: Value) -> tuple[Value, str | None]:
    """A canonical value after the feature's `onInvalid` policy, and the action taken
    (None: the value is kept as it is); `refuse` raises FeatureValueError naming the rule.

    Without a policy (or without an action for the case) nothing changes: a value
    outside the range is kept, and a missing one stays missing (serving refuses it by
    `required_value`)."""
    policy = feature.on_invalid
    if policy is None:
        return canonical, None
    action: str | None
    if canonical is None:
        action = policy.missing
        if action is None:
            return None, None
        if action == "refuse":
            raise FeatureValueError(feature.name, "is missing (onInvalid.missing: refuse)")
    elif policy.out_of_range is None or not out_of_range(feature, canonical):
        return canonical, None
    else:
        action = policy.out_of_range
        if action == "refuse":
            raise FeatureValueError(
                feature.name, f"{_range_of(feature)} (onInvalid.outOfRange: refuse)"
            )
        if action == CLIP:
            low = -np.inf if feature.min is None else feature.min
            high = np.inf if feature.max is None else feature.max
            return float(min(max(float(canonical), low), high)), CLIP
    if action == IMPUTE:
        imputed = policy.impute_value if feature.type == "numeric" else policy.impute_category
        return imputed, IMPUTE
    return canonical, FLAG


def _range_of(feature: FeatureSpec) -> str:
    if feature.type == "categorical":
        return "is not in the vocabulary"
    low = "-inf" if feature.min is None else f"{feature.min:g}"
    high = "inf" if feature.max is None else f"{feature.max:g}"
    return f"is outside [{low}, {high}]"


def policy_value(feature: FeatureSpec, raw: object) -> tuple[Value, str | None]:
    """`value`, then `apply_policy`: what training and drift read a stored value as."""
    return apply_policy(feature, value(feature, raw))


# --- what the model sees -----------------------------------------------------------------


def model_number(value: float | None) -> float:
    """The `numeric` input's cell for a canonical value (NaN when missing; float32 later)."""
    return np.nan if value is None else value


def model_text(value: str | None) -> str:
    """The `categorical` input's cell for a canonical value."""
    return MISSING_TEXT if value is None else value


def first_invalid_cell(
    numeric: NDArray[np.float32], *, required: bool
) -> tuple[int, int, str] | None:
    """(row, column, reason) of the first cell of a float32 input that breaks the rules.

    After the cast to float32 a number beyond float32 range is infinite, so `isinf`
    is exactly the range rule; NaN is a missing value, an error only where values
    are `required`.
    """
    if not numeric.size:
        return None
    if required:
        if np.isfinite(numeric).all():
            return None
        row, col = (int(i) for i in np.argwhere(~np.isfinite(numeric))[0])
        return row, col, IS_MISSING if np.isnan(numeric[row, col]) else NOT_FINITE
    infinite = np.isinf(numeric)
    if not infinite.any():
        return None
    row, col = (int(i) for i in np.argwhere(infinite)[0])
    return row, col, NOT_FINITE


_C1: Final = 0xCC9E2D51
_C2: Final = 0x1B873593
_MASK: Final = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = HASH_SEED) -> int:
    """MurmurHash3 x86_32 (Appleby), unsigned: ONNX Runtime's `com.microsoft.MurmurHash3`."""
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


def category_code(feature: FeatureSpec, text: str) -> int:
    """The code the network gets for a category text, as the exported graph computes it.

    Vocabulary: the position in the vocabulary, else `len(vocabulary)` (one slot for
    every other text; `ai.onnx.ml.LabelEncoder` with that default). Hashed: MurmurHash3
    of the UTF-8 bytes, seed 0, unsigned, modulo the bucket count.
    """
    if feature.vocabulary is not None:
        try:
            return feature.vocabulary.index(text)
        except ValueError:
            return len(feature.vocabulary)
    buckets = feature.hash_buckets or DEFAULT_HASH_BUCKETS
    return murmur3_32(text.encode("utf-8")) % buckets
