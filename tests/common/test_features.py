"""Feature dicts become the model's input arrays by one rule, with clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.api.spec import FeatureSpec
from driftline.common.feature_values import FeatureValueError
from driftline.common.features import FeatureLayout

LAYOUT = FeatureLayout.from_features(
    [
        FeatureSpec(name="amount"),
        FeatureSpec(name="channel", type="categorical", vocabulary=["web", "app"]),
        FeatureSpec(name="age"),
        FeatureSpec(name="zip", type="categorical", hash_buckets=16),
    ]
)


def test_columns_follow_contract_order_per_type() -> None:
    assert LAYOUT.numeric_names == ("amount", "age")
    assert LAYOUT.categorical_names == ("channel", "zip")
    numeric, categorical = LAYOUT.arrays(
        [{"age": 30, "amount": 1.5, "channel": "web", "zip": 75001}]
    )
    assert numeric.dtype == np.float32 and numeric.tolist() == [[1.5, 30.0]]
    assert categorical.tolist() == [["web", "75001"]]


def test_missing_values_are_nan_and_empty_text() -> None:
    numeric, categorical = LAYOUT.arrays([{"amount": None, "channel": None}])
    assert math.isnan(numeric[0, 0]) and math.isnan(numeric[0, 1])
    assert categorical.tolist() == [["", ""]]


def test_categorical_values_become_text() -> None:
    _, categorical = LAYOUT.arrays(
        [{"amount": 1.0, "age": 2.0, "channel": 7, "zip": "x"}, {"channel": "app", "zip": None}]
    )
    assert categorical.tolist() == [["7", "x"], ["app", ""]]


def test_bad_values_name_the_feature() -> None:
    with pytest.raises(FeatureValueError, match="'age'") as err:
        LAYOUT.arrays([{"amount": 1.0, "age": "old"}])
    assert err.value.feature == "age"
    with pytest.raises(FeatureValueError, match="finite"):
        LAYOUT.arrays([{"amount": float("inf"), "age": 1.0}])
    with pytest.raises(FeatureValueError, match="finite"):  # finite in float64, not in float32
        LAYOUT.arrays([{"amount": 1e39, "age": 1.0}])
    with pytest.raises(FeatureValueError, match="'zip'"):
        LAYOUT.arrays([{"amount": 1.0, "age": 1.0, "zip": 5.0}])
    with pytest.raises(FeatureValueError, match="'age'"):
        LAYOUT.check_row({"amount": 1.5, "age": True})


def test_contract_hash_changes_with_the_contract() -> None:
    other = FeatureLayout.from_features(
        [FeatureSpec(name="amount"), FeatureSpec(name="age", min=0.0)]
    )
    same = FeatureLayout.from_features(
        [FeatureSpec(name="amount", max=9.0), FeatureSpec(name="age")]
    )
    assert other.contract_hash() == same.contract_hash()  # min/max are not part of it
    assert LAYOUT.contract_hash() != other.contract_hash()
