"""The synthetic streams are reproducible, honour their schedules and their contracts."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.api.spec import FeatureSpec
from driftline.common.streams import (
    STREAMS,
    AgrawalStream,
    CovariateShiftStream,
    SEAStream,
    every,
    make_stream,
)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_same_seed_same_rows(name: str) -> None:
    a, b = make_stream(name, seed=7), make_stream(name, seed=7)
    ra, rb = a.take(300), b.take(300)
    np.testing.assert_array_equal(ra.numeric, rb.numeric)
    np.testing.assert_array_equal(ra.categorical, rb.categorical)
    np.testing.assert_array_equal(ra.labels, rb.labels)
    assert not np.array_equal(ra.numeric, make_stream(name, seed=8).take(300).numeric)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_rows_match_the_contract(name: str) -> None:
    stream = make_stream(name, seed=1)
    rows = stream.take(50)
    contract = stream.contract()
    for row in rows.features():
        assert set(row) == {f.name for f in contract}
        for f in contract:
            assert isinstance(row[f.name], float if f.type == "numeric" else str)
    stream.check_contract(contract)
    with pytest.raises(ValueError, match="missing"):
        stream.check_contract(contract[1:])


def test_blocks_are_the_same_as_one_take() -> None:
    whole = SEAStream(seed=3, schedule=[(0, 0), (150, 2)]).take(400)
    stream = SEAStream(seed=3, schedule=[(0, 0), (150, 2)])
    # Same rows whatever the block sizes, as long as the blocks do not straddle a switch.
    parts = [stream.take(150), stream.take(250)]
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), whole.labels)


def test_sea_concept_switch_changes_the_rule_at_the_scheduled_row() -> None:
    stream = SEAStream(seed=0, schedule=[(0, 0), (1000, 2)])
    rows = stream.take(2000)
    assert stream.drift_points == [1000]
    assert (rows.concept[:1000] == 0).all() and (rows.concept[1000:] == 2).all()
    s = rows.numeric[:, 0] + rows.numeric[:, 1]
    assert (rows.labels[:1000] == (s[:1000] <= 8.0)).all()
    assert (rows.labels[1000:] == (s[1000:] <= 7.0)).all()


def test_switch_to_acts_from_the_current_position() -> None:
    stream = SEAStream(seed=0)
    stream.take(10)
    stream.switch_to(3)
    rows = stream.take(5)
    assert (rows.concept == 3).all() and rows.start == 10
    with pytest.raises(ValueError, match="concept must be in"):
        stream.switch_to(9)


def test_label_noise_flips_about_that_share() -> None:
    clean = SEAStream(seed=5).take(20_000)
    noisy = SEAStream(seed=5, noise=0.1).take(20_000)
    assert 0.08 < np.mean(clean.labels != noisy.labels) < 0.12


def test_covariate_shift_moves_inputs_not_the_rule() -> None:
    stream = CovariateShiftStream(seed=0, schedule=[(0, 0), (500, 1)])
    rows = stream.take(1000)
    a, b = rows.numeric[:500], rows.numeric[500:]
    assert abs(a[:, 0].mean() - b[:, 0].mean()) > 2.0
    rule = rows.numeric[:, 1] > 1.5 * np.sin(rows.numeric[:, 0]) + 0.3 * rows.numeric[:, 2]
    assert (rows.labels == rule).all()
    assert set(rows.categorical[:500, 0]) == {"north"} and set(rows.categorical[500:, 0]) == {
        "south"
    }


def test_agrawal_function_zero_and_age_range() -> None:
    stream = AgrawalStream(seed=0, age_range=(30, 45))
    rows = stream.take(2000)
    age = rows.column("age").astype(float)
    assert age.min() >= 30 and age.max() <= 45
    assert (rows.labels == ((age < 40) | (age >= 60))).all()
    assert {f.name for f in stream.contract() if f.type == "categorical"} == {
        "elevel",
        "car",
        "zipcode",
    }


def test_every_builds_a_cycling_schedule() -> None:
    assert every(100, [0, 1], 350) == [(0, 0), (100, 1), (200, 0), (300, 1)]


def test_contract_objects_are_spec_features() -> None:
    assert all(isinstance(f, FeatureSpec) for f in make_stream("agrawal").contract())
