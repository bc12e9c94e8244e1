"""The reference file: checked against the feature contract, never unpickled."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.drift.encoding import FeatureEncoder
from driftline.drift.reference import (
    ReferenceUnavailableError,
    parse_reference,
    read_reference_file,
)
from tests.drift.streams import dynamic_model, reference_arrays

FEATURES = dynamic_model().spec.features


def test_a_reference_is_read_and_subsampled(tmp_path) -> None:
    arrays = reference_arrays(np.random.default_rng(0), n=3000)
    arrays["x1"][:10] = np.nan
    path = tmp_path / "reference.npz"
    np.savez(path, **arrays)
    ref = read_reference_file(path, FEATURES, "4", max_rows=1000)
    assert ref.version == "4" and ref.rows == 1000
    assert set(ref.numeric) == {"x1", "x2", "x3"} and set(ref.categorical) == {"color"}
    assert ref.label is None
    encoder = FeatureEncoder(FEATURES, ref)
    assert encoder.categories("color") == [0, 1, 2]  # blue, green, red
    assert np.isfinite(encoder.reference_rows).all()


def test_missing_features_are_named() -> None:
    arrays = reference_arrays(np.random.default_rng(0), n=100)
    del arrays["x2"], arrays["__output__"]
    with pytest.raises(ReferenceUnavailableError, match=r"x2.*__output__"):
        parse_reference(arrays, FEATURES, "1")


def test_object_arrays_are_refused_not_unpickled(tmp_path) -> None:
    arrays = reference_arrays(np.random.default_rng(0), n=50)
    arrays["color"] = arrays["color"].astype(object)
    path = tmp_path / "reference.npz"
    np.savez(path, **arrays)  # stores a pickle
    with pytest.raises(ReferenceUnavailableError, match="cannot read the reference"):
        read_reference_file(path, FEATURES, "1")


def test_categories_compare_as_text() -> None:
    arrays = reference_arrays(np.random.default_rng(0), n=20)
    arrays["color"] = np.array([3, 1] * 10)
    ref = parse_reference(arrays, FEATURES, "1")
    encoder = FeatureEncoder(FEATURES, ref)
    # 3.0 is no category (serving refuses floats there): like a missing value, -1.
    assert encoder.codes_of("color", [3, "3", 3.0, "1", None, "7"]).tolist() == [1, 1, -1, 0, -1, 2]


def test_a_reference_with_float_categories_is_refused() -> None:
    arrays = reference_arrays(np.random.default_rng(0), n=20)
    arrays["color"] = np.array([3.0, 1.5] * 10)
    with pytest.raises(ReferenceUnavailableError, match=r"color.*float"):
        parse_reference(arrays, FEATURES, "1")
