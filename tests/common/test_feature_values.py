"""One table of feature values, run through every path that reads them: they must agree.

Each case is (feature, raw value, expected): a canonical value, MISSING or ERROR. The
paths are the rules themselves (`driftline.common.feature_values`), serving's request
validation (the plain route and the Open Inference Protocol's per-feature tensors),
training's arrays (`FeatureLayout`, `CategoricalEncoder`) and the drift monitor's
encoding (`FeatureEncoder`). Serving refuses MISSING too: a request carries every
feature.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest

from driftline.api import parse_dynamic_model
from driftline.api.events import Features
from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import (
    FeatureValueError,
    category_code,
    model_text,
    required_value,
    value,
)
from driftline.common.features import FeatureLayout
from driftline.drift import encoding as drift_encoding
from driftline.drift.reference import parse_reference
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import InvalidInputError
from driftline.inference.oip import OipProtocol
from driftline.inference.plain import PlainProtocol
from driftline.trainer.encoding import CategoricalEncoder

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

MISSING = "<missing>"
ERROR = "<error>"
ABSENT = object()  # the feature is not in the row at all

VOCABULARY = ["web", "app", "5", "true"]
DOCUMENT: dict[str, Any] = {
    "apiVersion": "driftline.io/v1alpha1",
    "kind": "DynamicModel",
    "metadata": {"name": "m", "namespace": "test"},
    "spec": {
        "model": {
            "registry": {"trackingUri": "http://127.0.0.1:5000", "name": "m"},
            "task": "classification",
        },
        "features": [
            {"name": "amount", "min": 0, "max": 100},
            {"name": "channel", "type": "categorical", "vocabulary": VOCABULARY},
            {"name": "zip", "type": "categorical", "hashBuckets": 16},
        ],
        "kafka": {"bootstrapServers": "127.0.0.1:9092", "partitions": 1},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
    },
}
SPEC = parse_dynamic_model(DOCUMENT).spec
FEATURES: dict[str, FeatureSpec] = {f.name: f for f in SPEC.features}
BASE: dict[str, Any] = {"amount": 1.0, "channel": "web", "zip": "75001"}

CASES: list[tuple[str, object, object]] = [
    # numeric: numbers within float32 range; text and booleans are no numbers
    ("amount", 3.5, 3.5),
    ("amount", 3, 3.0),
    ("amount", -0.25, -0.25),
    ("amount", 1000.0, 1000.0),  # beyond max: valid (max is an expectation; drift counts it)
    ("amount", 10**20, 1e20),
    ("amount", 3.4e38, 3.4e38),
    ("amount", "3.5", ERROR),
    ("amount", "abc", ERROR),
    ("amount", "", ERROR),
    ("amount", True, ERROR),
    ("amount", False, ERROR),
    ("amount", math.inf, ERROR),
    ("amount", -math.inf, ERROR),
    ("amount", 1e39, ERROR),  # finite as float64, infinite as float32
    ("amount", -1e39, ERROR),
    ("amount", 10**40, ERROR),
    ("amount", [1, 2], ERROR),
    ("amount", {"a": 1}, ERROR),
    ("amount", None, MISSING),
    ("amount", ABSENT, MISSING),
    ("amount", math.nan, MISSING),
    # categorical with a vocabulary: text verbatim, integers as their text
    ("channel", "web", "web"),
    ("channel", "Web", "Web"),  # outside the vocabulary: valid, the out-of-vocabulary slot
    ("channel", "unknown", "unknown"),
    ("channel", "", ""),
    ("channel", "true", "true"),
    ("channel", "True", "True"),
    ("channel", 5, "5"),
    ("channel", "5", "5"),
    ("channel", -7, "-7"),
    ("channel", 10**30, str(10**30)),
    ("channel", 5.0, ERROR),
    ("channel", 1.5, ERROR),
    ("channel", True, ERROR),
    ("channel", False, ERROR),
    ("channel", ["web"], ERROR),
    ("channel", {"a": "web"}, ERROR),
    ("channel", math.inf, ERROR),
    ("channel", None, MISSING),
    ("channel", ABSENT, MISSING),
    ("channel", math.nan, MISSING),
    # categorical, hashed
    ("zip", "75001", "75001"),
    ("zip", 75001, "75001"),
    ("zip", "anything at all", "anything at all"),
    ("zip", 75001.0, ERROR),
    ("zip", None, MISSING),
]


def case_id(case: tuple[str, object, object]) -> str:
    name, raw, _ = case
    return f"{name}={'absent' if raw is ABSENT else repr(raw)[:24]}"


def row_with(name: str, raw: object) -> dict[str, Any]:
    row = dict(BASE)
    if raw is ABSENT:
        del row[name]
    else:
        row[name] = raw
    return row


def outcome_of(call: Any) -> object:
    """What a path made of the value: its canonical value, MISSING or ERROR."""
    try:
        return call()
    except (FeatureValueError, InvalidInputError):
        return ERROR


def same(got: object, expected: object) -> bool:
    if isinstance(expected, float) and isinstance(got, float):
        return got == expected or (math.isnan(got) and math.isnan(expected))
    return type(got) is type(expected) and got == expected


# --- the paths ---------------------------------------------------------------------------


def rules(name: str, raw: object) -> object:
    canonical = value(FEATURES[name], None if raw is ABSENT else raw)
    return MISSING if canonical is None else canonical


def rules_required(name: str, raw: object) -> object:
    return required_value(FEATURES[name], None if raw is ABSENT else raw)


CONTRACT = FeatureContract(SPEC)
PLAIN = PlainProtocol(CONTRACT, "m", max_rows=4)
OIP = OipProtocol(CONTRACT, "m", max_rows=4)


def refused(call: Any) -> tuple[Any, InvalidInputError | None]:
    try:
        return call(), None
    except InvalidInputError as exc:
        return None, exc


def serving_plain(name: str, raw: object) -> object:
    # Two rows, the case in the second: the 422 must name row and feature.
    body = json.dumps({"features": [BASE, row_with(name, raw)]}).encode()
    request, error = refused(lambda: PLAIN.decode(body))
    if error is not None:
        assert error.status == 422
        assert error.field == f"features[1].{name}", error.message
        return ERROR
    return served_value(request.rows.numeric, request.rows.categorical, name)


def serving_oip(name: str, raw: object) -> object:
    if raw is ABSENT:
        pytest.skip("a missing input is a missing tensor (tested with the protocol)")
    inputs = []
    for feature, base in BASE.items():
        datatype = "FP64" if FEATURES[feature].type == "numeric" else "BYTES"
        data = [base, raw if feature == name else base]
        inputs.append({"name": feature, "shape": [2], "datatype": datatype, "data": data})
    body = json.dumps({"inputs": inputs}).encode()
    request, error = refused(lambda: OIP.decode(body, None))
    if error is not None:
        assert error.status == 422
        assert error.field is not None and error.field.startswith("inputs"), error.message
        return ERROR
    return served_value(request.rows.numeric, request.rows.categorical, name)


def served_value(numeric: Any, categorical: Any, name: str) -> object:
    kind, column = CONTRACT.column[name]
    if kind == "numeric":
        cell = numeric[1, column]
        assert numeric.dtype == np.float32
        return float(cell)
    text = categorical[1, column]
    assert type(text) is str
    return text


LAYOUT = FeatureLayout.from_features(SPEC.features)
ENCODER = CategoricalEncoder(LAYOUT.categorical)


def training(name: str, raw: object) -> object:
    row = row_with(name, raw)
    checked = outcome_of(lambda: LAYOUT.check_row(row))  # finds the bad rows of a batch
    try:
        numeric, categorical = LAYOUT.arrays([BASE, row])
    except FeatureValueError as exc:
        error: FeatureValueError | None = exc
    else:
        error = None
    if error is not None:
        assert error.feature == name and checked is ERROR
        return ERROR
    assert checked is None
    codes = ENCODER(categorical)
    if FEATURES[name].type == "numeric":
        cell = float(numeric[1, LAYOUT.numeric_names.index(name)])
        return MISSING if math.isnan(cell) else cell
    j = LAYOUT.categorical_names.index(name)
    text = categorical[1, j]
    assert codes[1, j] == category_code(FEATURES[name], text)  # what the graph computes
    return text


REFERENCE = parse_reference(
    {
        "amount": np.array([1.0, 2.0, 50.0]),
        "channel": np.array(["web", "app", "5"]),
        "zip": np.array(["75001", "75002", ""]),
        "__output__": np.zeros(3),
    },
    list(SPEC.features),
    "1",
)
DRIFT = drift_encoding.FeatureEncoder(list(SPEC.features), REFERENCE)


def drift(name: str, raw: object) -> object:
    encoded = DRIFT.encode([row_with(name, raw)])
    invalid = encoded.issues[(name, drift_encoding.INVALID)]
    missing = encoded.issues[(name, drift_encoding.MISSING)]
    if FEATURES[name].type == "numeric":
        cell = float(encoded.numeric[0, DRIFT.numeric_names.index(name)])
        if invalid:
            assert math.isnan(cell) and not missing
            return ERROR
        if missing:
            assert math.isnan(cell)
            return MISSING
        low, high = FEATURES[name].min, FEATURES[name].max
        assert low is not None and high is not None
        assert encoded.issues[(name, drift_encoding.OUT_OF_RANGE)] == int(not low <= cell <= high)
        return cell
    code = int(encoded.codes[0, DRIFT.categorical_names.index(name)])
    if invalid:
        assert code == -1 and not missing
        return ERROR
    if missing:
        assert code == -1
        return MISSING
    vocab = DRIFT.vocab[name]
    text = next((t for t, c in vocab.items() if c == code), None)
    assert code == vocab.get(str(text), DRIFT.unseen_code(name))
    return text if text is not None else f"<unseen {code}>"


def drift_text(expected: object, name: str) -> object:
    """What drift can tell of a valid category: the text if the reference has it."""
    if expected in (MISSING, ERROR) or not isinstance(expected, str):
        return expected
    if expected in DRIFT.vocab[name]:
        return expected
    return f"<unseen {DRIFT.unseen_code(name)}>"


# --- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_path_agrees(case: tuple[str, object, object]) -> None:
    name, raw, expected = case
    as_float32 = (
        float(np.float32(expected)) if isinstance(expected, float) else expected  # model input
    )
    request = ERROR if expected is MISSING else as_float32
    # The model cannot tell a missing category from the empty text: both are "".
    missing_category = expected is MISSING and FEATURES[name].type == "categorical"
    got = {
        "rules": outcome_of(lambda: rules(name, raw)),
        "rules (required)": outcome_of(lambda: rules_required(name, raw)),
        "serving plain": serving_plain(name, raw),
        "training": outcome_of(lambda: training(name, raw)),
        "drift": drift(name, raw),
    }
    want = {
        "rules": expected,
        "rules (required)": ERROR if expected is MISSING else expected,
        "serving plain": request,
        "training": model_text(None) if missing_category else as_float32,
        "drift": drift_text(expected, name),
    }
    wrong = {path: (got[path], want[path]) for path in got if not same(got[path], want[path])}
    assert not wrong, f"(got, expected) per path: {wrong}"


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[1] is not ABSENT and not isinstance(c[1], dict)], ids=case_id
)
def test_serving_oip_agrees(case: tuple[str, object, object]) -> None:
    name, raw, expected = case
    if isinstance(expected, float):
        expected = float(np.float32(expected))
    want = ERROR if expected is MISSING else expected
    assert same(serving_oip(name, raw), want)


@pytest.mark.parametrize("case", [c for c in CASES if c[2] not in (ERROR, MISSING)], ids=case_id)
def test_a_served_value_reads_the_same_from_the_prediction_log(
    case: tuple[str, object, object],
) -> None:
    """Training and drift read what serving logged (as JSON events), not the request."""
    name, raw, expected = case
    request = PLAIN.decode(json.dumps({"features": row_with(name, raw)}).encode())
    served = dict(zip(CONTRACT.names, request.rows.values[0], strict=True))
    logged = msgspec.json.decode(msgspec.json.encode(served), type=Features)[name]
    as_float32 = float(np.float32(expected)) if isinstance(expected, float) else expected
    assert same(outcome_of(lambda: training(name, logged)), as_float32)
    assert same(drift(name, logged), drift_text(expected, name))


def test_numpy_scalars_read_as_their_python_values() -> None:
    amount, channel = FEATURES["amount"], FEATURES["channel"]
    assert value(amount, np.float32(2.5)) == 2.5
    assert value(amount, np.int64(7)) == 7.0
    assert value(amount, np.float64("nan")) is None
    assert value(channel, np.str_("web")) == "web"
    assert value(channel, np.int32(5)) == "5"
    for raw in (np.bool_(True), np.float64(5.0)):
        with pytest.raises(FeatureValueError):
            value(channel, raw)
    with pytest.raises(FeatureValueError):
        value(amount, np.bool_(True))


def test_errors_name_the_feature_and_say_why() -> None:
    with pytest.raises(FeatureValueError) as caught:
        value(FEATURES["amount"], "3.5")
    assert caught.value.feature == "amount"
    assert caught.value.reason == "must be a number, got the text '3.5'"
    with pytest.raises(FeatureValueError, match="is missing"):
        required_value(FEATURES["zip"], None)
    assert model_text(None) == ""


def test_serving_says_what_the_rule_says() -> None:
    body = json.dumps({"features": {**BASE, "channel": 5.0}}).encode()
    with pytest.raises(InvalidInputError) as caught:
        PLAIN.decode(body)
    assert caught.value.field == "features.channel"
    assert caught.value.message == "features.channel must be text or an integer, got the float 5.0"


def test_category_codes_follow_the_vocabulary_then_the_hash() -> None:
    channel, zip_ = FEATURES["channel"], FEATURES["zip"]
    assert [category_code(channel, t) for t in VOCABULARY] == [0, 1, 2, 3]
    assert category_code(channel, "Web") == len(VOCABULARY)
    assert 0 <= category_code(zip_, "75001") < 16
