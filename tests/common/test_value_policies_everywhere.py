"""`onInvalid` policies: one table of edge values, run through serving, training and drift.

Each case is (feature, raw value, expected): the value the model sees (float or text),
MISSING (passed on as missing), or ERROR (serving answers 422 naming the field and the
rule; training refuses the row; drift counts the value invalid), plus the action the
prediction log's `flags` names. Every path must agree with the table and so with the
others (`driftline.common.feature_values.apply_policy` is the one rule).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from driftline.api import parse_dynamic_model
from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import FeatureValueError, policy_value
from driftline.common.features import FeatureLayout
from driftline.drift import encoding as drift_encoding
from driftline.drift.reference import parse_reference
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import InvalidInputError
from driftline.inference.plain import PlainProtocol

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

MISSING = "<missing>"
ERROR = "<error>"
ABSENT = object()
VOCABULARY = ["web", "app"]


def feature(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra}


FEATURES_DOC = [
    feature(
        "clipped",
        min=0,
        max=10,
        onInvalid={"outOfRange": "clip", "missing": "impute", "imputeValue": 5},
    ),
    feature("refused", min=0, max=10, onInvalid={"outOfRange": "refuse", "missing": "refuse"}),
    feature("flagged", min=0, max=10, onInvalid={"outOfRange": "flag", "missing": "flag"}),
    feature("imputed", min=0, max=10, onInvalid={"outOfRange": "impute", "imputeValue": 1.5}),
    feature("plain", min=0, max=10),  # no policy: as before
    feature(
        "channel",
        type="categorical",
        vocabulary=VOCABULARY,
        onInvalid={"outOfRange": "impute", "missing": "flag", "imputeCategory": "web"},
    ),
    feature(
        "strict",
        type="categorical",
        vocabulary=VOCABULARY,
        onInvalid={"outOfRange": "refuse", "missing": "impute", "imputeCategory": "app"},
    ),
]
DOCUMENT: dict[str, Any] = {
    "apiVersion": "driftline.io/v1alpha1",
    "kind": "DynamicModel",
    "metadata": {"name": "m", "namespace": "test"},
    "spec": {
        "model": {"registry": {"trackingUri": "http://127.0.0.1:5000", "name": "m"}},
        "features": FEATURES_DOC,
        "kafka": {"bootstrapServers": "127.0.0.1:9092", "partitions": 1},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
    },
}
SPEC = parse_dynamic_model(DOCUMENT).spec
FEATURES: dict[str, FeatureSpec] = {f.name: f for f in SPEC.features}
BASE: dict[str, Any] = {
    "clipped": 1.0, "refused": 1.0, "flagged": 1.0, "imputed": 1.0, "plain": 1.0,
    "channel": "web", "strict": "web",
}  # fmt: skip

CASES: list[tuple[str, object, object, str | None]] = [
    # in range: every policy keeps the value
    ("clipped", 3.5, 3.5, None),
    ("clipped", 3, 3.0, None),  # an int is its float
    ("clipped", 10, 10.0, None),  # the bound itself is in range
    # out of range, per policy
    ("clipped", 11.5, 10.0, "clip"),
    ("clipped", -1e30, 0.0, "clip"),
    ("clipped", 3.0e38, 10.0, "clip"),  # within float32
    ("refused", 11.5, ERROR, None),
    ("flagged", 11.5, 11.5, "flag"),
    ("flagged", -2, -2.0, "flag"),
    ("imputed", 11.5, 1.5, "impute"),
    ("plain", 11.5, 11.5, None),  # no policy: accepted, unmarked (as before)
    # missing, per policy
    ("clipped", None, 5.0, "impute"),
    ("clipped", ABSENT, 5.0, "impute"),
    ("refused", None, ERROR, None),
    ("flagged", None, MISSING, "flag"),
    ("flagged", ABSENT, MISSING, "flag"),
    # what no policy covers: the rules refuse it whatever the policy says
    ("clipped", math.inf, ERROR, None),
    ("clipped", -math.inf, ERROR, None),
    ("clipped", 1e39, ERROR, None),  # float32 overflow is no out-of-range value
    ("flagged", 1e39, ERROR, None),
    ("clipped", True, ERROR, None),
    ("flagged", "3.5", ERROR, None),
    ("flagged", "", ERROR, None),
    # categorical
    ("channel", "web", "web", None),
    ("channel", "Web", "web", "impute"),  # unknown category
    ("channel", "", "web", "impute"),  # the empty text is a category, not in the vocabulary
    ("channel", 5, "web", "impute"),  # an int is its text, "5": unknown
    ("channel", None, MISSING, "flag"),
    ("channel", ABSENT, MISSING, "flag"),
    ("channel", 5.0, ERROR, None),
    ("channel", True, ERROR, None),
    ("strict", "app", "app", None),
    ("strict", "unknown", ERROR, None),
    ("strict", None, "app", "impute"),
]


def case_id(case: tuple[str, object, object, str | None]) -> str:
    name, raw = case[0], case[1]
    return f"{name}={'absent' if raw is ABSENT else repr(raw)[:24]}"


def row_with(name: str, raw: object) -> dict[str, Any]:
    row = dict(BASE)
    if raw is ABSENT:
        del row[name]
    else:
        row[name] = raw
    return row


CONTRACT = FeatureContract(SPEC)
PLAIN = PlainProtocol(CONTRACT, "m", max_rows=4)
LAYOUT = FeatureLayout.from_features(SPEC.features)
REFERENCE = parse_reference(
    {
        **{
            n: np.array([1.0, 2.0, 3.0])
            for n in ("clipped", "refused", "flagged", "imputed", "plain")
        },
        "channel": np.array(["web", "app", "web"]),
        "strict": np.array(["web", "app", "web"]),
        "__output__": np.zeros(3),
    },
    list(SPEC.features),
    "1",
)
DRIFT = drift_encoding.FeatureEncoder(list(SPEC.features), REFERENCE)


def model_cell(name: str, cell: object) -> object:
    """A cell of a model input, in the table's terms."""
    if FEATURES[name].type == "numeric":
        number = float(cell)  # type: ignore[arg-type]
        return MISSING if math.isnan(number) else number
    return MISSING if cell == "" else cell


def serving(name: str, raw: object) -> tuple[object, str | None]:
    body = json.dumps({"features": [BASE, row_with(name, raw)]}).encode()
    try:
        request = PLAIN.decode(body)
    except InvalidInputError as exc:
        error: InvalidInputError | None = exc
    else:
        error = None
    if error is not None:
        assert error.status == 422 and error.field == f"features[1].{name}", error.message
        return ERROR, None
    kind, j = CONTRACT.column[name]
    inputs = request.rows.numeric if kind == "numeric" else request.rows.categorical
    assert inputs is not None
    row = request.rows.values[1]
    flags = getattr(row, "flags", {})
    assert set(flags) <= {name}
    assert getattr(request.rows.values[0], "flags", None) is None  # the plain row: unmarked
    return model_cell(name, inputs[1, j]), flags.get(name)


def training(name: str, raw: object) -> tuple[object, str | None]:
    row = row_with(name, raw)
    try:
        LAYOUT.check_row(row)
        numeric, categorical = LAYOUT.arrays([BASE, row])
    except FeatureValueError as exc:
        refused: FeatureValueError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.feature == name
        return ERROR, None
    if FEATURES[name].type == "numeric":
        cell: object = numeric[1, LAYOUT.numeric_names.index(name)]
    else:
        cell = categorical[1, LAYOUT.categorical_names.index(name)]
    return model_cell(name, cell), policy_value(FEATURES[name], None if raw is ABSENT else raw)[1]


def drift(name: str, raw: object) -> object:
    encoded = DRIFT.encode([row_with(name, raw)])
    if encoded.issues[(name, drift_encoding.INVALID)]:
        return ERROR
    if encoded.issues[(name, drift_encoding.MISSING)]:
        return MISSING
    if FEATURES[name].type == "numeric":
        return float(encoded.numeric[0, DRIFT.numeric_names.index(name)])
    code = int(encoded.codes[0, DRIFT.categorical_names.index(name)])
    return next(t for t, c in DRIFT.vocab[name].items() if c == code)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_serving_training_and_drift_take_the_same_decision(
    case: tuple[str, object, object, str | None],
) -> None:
    name, raw, expected, action = case
    model = float(np.float32(expected)) if isinstance(expected, float) else expected
    got = {
        "serving": serving(name, raw),
        "training": training(name, raw),
        "drift": drift(name, raw),
    }
    want = {"serving": (model, action), "training": (model, action), "drift": expected}
    assert got == want


def test_a_refusal_names_the_field_and_the_rule() -> None:
    body = json.dumps({"features": {**BASE, "refused": 11.5}}).encode()
    with pytest.raises(InvalidInputError) as caught:
        PLAIN.decode(body)
    assert caught.value.field == "features.refused"
    assert caught.value.message == (
        "features.refused is outside [0, 10] (onInvalid.outOfRange: refuse)"
    )
    body = json.dumps({"features": {**BASE, "strict": "unknown"}}).encode()
    with pytest.raises(InvalidInputError, match=r"not in the vocabulary \(onInvalid"):
        PLAIN.decode(body)


def test_without_policies_the_contract_takes_the_old_path() -> None:
    doc = json.loads(json.dumps(DOCUMENT))
    for f in doc["spec"]["features"]:
        f.pop("onInvalid", None)
    contract = FeatureContract(parse_dynamic_model(doc).spec)
    assert contract.policies == () and contract.required
    rows = PlainProtocol(contract, "m", 1).decode(json.dumps({"features": BASE}).encode()).rows
    assert type(rows.values[0]) is tuple
