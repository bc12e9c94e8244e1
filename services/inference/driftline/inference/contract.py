"""The feature contract as the request path uses it: validated rows in the model's layout.

The DynamicModel lists features in one order; the ONNX graph takes the numeric ones
as one float32 [N, k] tensor and the categorical ones as one string [N, m] tensor,
each in contract order (`driftline.api.artifacts`). Everything the hot path needs
is computed here once per process: the msgspec types that decode and type-check a
row in one C pass, and the column positions. No model object is built per request.

What a valid value is belongs to `driftline.common.feature_values`, which training
and the drift monitor read by too: the decoders use its `WIRE_TYPES`, the float32
range is its `first_invalid_cell`, and a refused value is explained (on the error
path only) by its `required_value`, so a 422 says what the rule says.

Features with an `onInvalid` policy go through its `apply_policy` after decoding; when
no feature declares one, the request path is what it was (one falsy check per request).
A row a policy changed or flagged is a `MarkedRow`: its `flags` go to the prediction log.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.api.artifacts import OUTPUT_LABEL, OUTPUT_PROBABILITIES, OUTPUT_VALUE
from driftline.api.spec import DynamicModelSpec, FeatureSpec
from driftline.common.feature_values import (
    WIRE_TYPES,
    FeatureValueError,
    first_invalid_cell,
    policy_value,
    required_value,
)
from driftline.inference import metrics
from driftline.inference.errors import BadRequestError, InvalidInputError

FeatureValues = Sequence[float | str]
Array = npt.NDArray[Any]

# Numbers beyond float32 become inf when cast, and are refused by `check_finite` with
# the field's name; numpy's warning about it would only be noise (and np.errstate
# costs a microsecond per request).
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)


class FeatureContract:
    """Numeric and categorical feature names in contract order, and their row type."""

    def __init__(self, spec: DynamicModelSpec) -> None:
        self.task = spec.model.task
        self.classes = spec.model.classes
        self.numeric: tuple[str, ...] = tuple(f.name for f in spec.features if f.type == "numeric")
        self.categorical: tuple[str, ...] = tuple(
            f.name for f in spec.features if f.type == "categorical"
        )
        # Rows are held numeric first, then categorical: the order of the two model inputs.
        self.names: tuple[str, ...] = self.numeric + self.categorical
        self.column: dict[str, tuple[str, int]] = {
            **{name: ("numeric", i) for i, name in enumerate(self.numeric)},
            **{name: ("categorical", i) for i, name in enumerate(self.categorical)},
        }
        self.features: dict[str, FeatureSpec] = {f.name: f for f in spec.features}
        self.k = len(self.numeric)
        self.sourced: frozenset[str] = frozenset(f.name for f in spec.features if f.source)
        """Features the client does not send: found at serving (`driftline.inference.sources`)."""
        self.sticky_field = spec.rollout.sticky_key
        """The request field whose value is the canary's sticky key (`rollout.stickyKey`):
        a top-level field of the plain route, a request parameter of the OIP route."""
        feast_fields = [
            key.field
            for f in spec.features
            if f.source is not None and f.source.feast is not None
            for key in f.source.feast.entity_keys
        ]
        self.request_fields: tuple[str, ...] = tuple(
            name
            for name in dict.fromkeys([self.sticky_field, *feast_fields])
            if name != "entity_id"
        )
        """Per-row request fields besides entity_id the request path reads: the sticky key
        and the fields of Feast join keys (`entityKeys[].field`), each decoded like it."""
        self.policies: tuple[tuple[int, FeatureSpec], ...] = tuple(
            (j, self.features[name])
            for j, name in enumerate(self.names)
            if self.features[name].on_invalid is not None
        )
        """(position in a row, feature) of the features with an `onInvalid` policy."""
        optional = {f.name for _, f in self.policies if f.on_invalid and f.on_invalid.missing}
        self.required = not optional
        """Whether every feature must be present (no policy says what to do when missing)."""
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for j, name in enumerate(self.names):
            kind = "numeric" if j < self.k else "categorical"
            field = f"n{j}" if j < self.k else f"c{j - self.k}"
            wire = WIRE_TYPES[kind]
            if name in self.sourced:
                # Decodes only when absent (or null): 0.0 holds its place until its value
                # is found, and a value the client sends is refused.
                fields.append((field, None, 0.0))
            elif name in optional:
                fields.append((field, wire | None, None))
            else:
                fields.append((field, wire))
        rename = {field[0]: name for field, name in zip(fields, self.names, strict=True)}
        # Field names are positional and renamed to the feature names, so any feature
        # name (also a Python keyword) works, and astuple() gives the model's order.
        self.row_type: type[msgspec.Struct] = msgspec.defstruct(
            "Features", fields, kw_only=True, rename=rename
        )

    @property
    def outputs(self) -> list[tuple[str, type[np.generic], int]]:
        """(name, dtype, width) of each model output per row; width 0 means a scalar."""
        if self.task == "classification":
            return [(OUTPUT_LABEL, np.int64, 0), (OUTPUT_PROBABILITIES, np.float32, self.classes)]
        return [(OUTPUT_VALUE, np.float32, 0)]

    def blank(self, rows: int) -> tuple[Array | None, Array | None]:
        """Inputs of `rows` zero rows (warm-up and timing)."""
        numeric = np.zeros((rows, self.k), dtype=np.float32) if self.k else None
        categorical = (
            np.full((rows, len(self.categorical)), "", dtype=object) if self.categorical else None
        )
        return numeric, categorical

    def arrange(self, values: Sequence[FeatureValues], where: str) -> Rows:
        """Rows given as value tuples in `names` order -> the model's two inputs."""
        if self.policies:
            values = self.apply_policies(values, where)
        k = self.k
        numeric: Array | None
        categorical: Array | None = None
        if not self.categorical:
            numeric = np.array(values, dtype=np.float32).reshape(len(values), k)
        else:
            text = str if self.required else _text
            numeric = np.array([v[:k] for v in values], dtype=np.float32) if k else None
            if numeric is not None:
                numeric = numeric.reshape(len(values), k)
            categorical = np.array([[text(c) for c in v[k:]] for v in values], dtype=object)
            categorical = categorical.reshape(len(values), len(self.categorical))
        if numeric is not None:
            self.check_finite(numeric, where, multi=len(values) > 1)
        return Rows(len(values), numeric, categorical, values)

    def apply_policies(self, values: Sequence[FeatureValues], where: str) -> list[FeatureValues]:
        """Rows after the features' `onInvalid` policies (`feature_values.apply_policy`),
        a `MarkedRow` where one acted; a `refuse` is a 422 naming the field and the rule."""
        out: list[FeatureValues] = []
        multi = len(values) > 1
        for r, row in enumerate(values):
            changed: list[Any] | None = None
            flags: dict[str, str] = {}
            for j, feature in self.policies:
                try:
                    canonical, action = policy_value(feature, row[j])
                except FeatureValueError as exc:
                    metrics.value_policy_total.labels(feature.name, "", "refuse").inc()
                    field = f"{where}[{r}].{feature.name}" if multi else f"{where}.{feature.name}"
                    raise InvalidInputError(f"{field} {exc.reason}", field=field) from None
                if action is not None:
                    changed = list(row) if changed is None else changed
                    changed[j] = canonical
                    flags[feature.name] = action
            if changed is None:
                out.append(row)
            else:
                out.append(MarkedRow(changed, flags))
        return out

    def check_finite(self, numeric: Array, where: str, multi: bool) -> None:
        """NaN, inf and values beyond float32 are refused, naming the first such field
        (NaN is a missing value, allowed where a policy says what to do with it)."""
        bad = first_invalid_cell(numeric, required=self.required)
        if bad is not None:
            row, col, reason = bad
            name = self.numeric[col]
            field = f"{where}[{row}].{name}" if multi else f"{where}.{name}"
            if name in self.sourced:  # sent as null: decoded, but not the client's to send
                reason = "is found at serving (its source in the spec); do not send it"
            raise InvalidInputError(f"{name} {reason}", field=field)

    def explain(self, error: InvalidInputError, body: bytes) -> InvalidInputError:
        """The decoder's 422 for a feature value, reworded by the value rules (error path).

        msgspec says `Expected `float`, got `str``; the rules say what a feature takes.
        """
        match = _FEATURE_FIELD.match(error.field or "")
        if match is None or match["name"] not in self.features:
            return error
        if match["name"] in self.sourced:
            return InvalidInputError(
                f"{error.field} is found at serving (its source in the spec); do not send it",
                field=error.field,
            )
        try:
            doc = msgspec.json.decode(body)
            node = doc["features"]
            if match["row"] is not None:
                node = node[int(match["row"])]
            raw = node.get(match["name"])
        except (
            msgspec.DecodeError,
            ValueError,
            LookupError,
            TypeError,
            AttributeError,
            RecursionError,
        ):
            return error
        try:
            required_value(self.features[match["name"]], raw)
        except FeatureValueError as exc:
            return InvalidInputError(f"{error.field} {exc.reason}", field=error.field)
        return error


def _text(value: object) -> str:
    return "" if value is None else str(value)  # the model's text for a missing category


class MarkedRow(tuple[Any, ...]):
    """A row an `onInvalid` policy changed or flagged; `flags`: feature -> action."""

    flags: dict[str, str]

    def __new__(cls, values: Sequence[Any], flags: dict[str, str]) -> MarkedRow:
        row = super().__new__(cls, values)
        row.flags = flags
        return row


_FEATURE_FIELD = re.compile(r"^features(?:\[(?P<row>\d+)\])?\.(?P<name>.+)$")


@dataclass(slots=True)
class Rows:
    """Validated rows of one request, in the model's layout.

    `values` keeps each row as the client sent it (contract order, numeric first), for
    the prediction log ("features as served") and the cache key.
    """

    n: int
    numeric: Array | None
    categorical: Array | None
    values: Sequence[FeatureValues]

    def take(self, index: Sequence[int]) -> Rows:
        idx = np.asarray(index)
        return Rows(
            len(index),
            None if self.numeric is None else self.numeric[idx],
            None if self.categorical is None else self.categorical[idx],
            [self.values[i] for i in index],
        )


def scatter(parts: list[tuple[list[int], list[Array]]], n: int) -> list[Array]:
    """Outputs of row subsets (their indexes, their arrays) -> outputs of all n rows."""
    first = parts[0][1]
    merged = [np.empty((n, *o.shape[1:]), dtype=o.dtype) for o in first]
    for index, outputs in parts:
        for target, values in zip(merged, outputs, strict=True):
            target[index] = values
    return merged


# --- errors of the msgspec decoders, in the client's terms ------------------------------

_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def invalid_from_msgspec(exc: msgspec.ValidationError) -> InvalidInputError:
    """'Expected `float`, got `str` - at `$.features.amount`' -> 422 naming features.amount."""
    text = str(exc)
    match = _AT.match(text)
    message, path = (match["msg"], match["path"].lstrip(".")) if match else (text, "")
    missing = _MISSING.match(message)
    if missing:
        path = f"{path}.{missing['name']}" if path else missing["name"]
        return InvalidInputError(f"{path} is missing", field=path)
    message = message.replace("Expected `int | str`", "Expected `str`")
    return InvalidInputError(f"{path or 'body'}: {message}", field=path or None)


def non_finite_field(body: bytes) -> str | None:
    """Where a body that msgspec refused holds NaN or Infinity (the slow path of errors).

    JSON has no NaN, but Python's `json.dumps` writes it; a client that sends one gets a
    422 naming the field instead of a 400 about malformed JSON.
    """
    import json

    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to say
        return None

    def walk(node: Any, path: str) -> str | None:
        if isinstance(node, float) and not math.isfinite(node):
            return path
        items: Any = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, child in items:
            sub = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
            found = walk(child, sub)
            if found is not None:
                return found
        return None

    try:
        return walk(doc, "")
    except RecursionError:
        return None


def too_deep() -> BadRequestError:
    """The error for a body nested deeper than the decoders follow (a hostile body)."""
    return BadRequestError("the body is nested too deeply to decode", field="body")


def decode_body(decoder: msgspec.json.Decoder[Any], body: bytes, what: str) -> Any:
    """`decoder.decode(body)`, its failures as the errors a client can act on: a 422
    naming the field (wrong type, missing, NaN or Infinity), else a 400 saying that
    `what` is not valid JSON, or is nested too deeply."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid_from_msgspec(exc) from exc
    except msgspec.DecodeError as exc:
        field = non_finite_field(body)
        if field is not None:
            raise InvalidInputError(f"{field} must be a finite number", field=field) from exc
        raise BadRequestError(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise too_deep() from None


@dataclass(slots=True)
class Served:
    """What the service answers for one request: per row, its id, version and variant."""

    request_ids: list[str]
    outputs: list[Array]
    """One array per `FeatureContract.outputs` entry, rows in request order."""
    versions: list[str]
    variants: list[str]

    def uniform(self) -> tuple[str, str] | None:
        """(version, variant) when every row shares them (the usual case), else None."""
        first = (self.versions[0], self.variants[0])
        if self.versions.count(first[0]) == len(self.versions) and self.variants.count(
            first[1]
        ) == len(self.variants):
            return first
        return None
