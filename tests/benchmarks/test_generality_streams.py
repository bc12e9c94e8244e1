"""The learner's generality benchmark builds every family it names, as its docstring says.

The full benchmark takes an hour; this checks in seconds that each family's rows fit
its feature contract (every input of the contract present, categorical ones from their
vocabulary), that classes and concept changes are where the benchmark scores them, and
that families meant to differ do (two Friedman families once built the same rows).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.trainer import generality

SEGMENT = 1500  # the smallest that every family takes (gradual widths of 500 to 2,000 rows)
FAMILIES = sorted({*generality.FULL, *generality.UNSEEN})


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_builds_rows_that_fit_its_contract(name: str) -> None:
    stream = generality.build(name, seed=0, segment=SEGMENT)
    data, contract = stream.data, stream.contract
    rows = len(data)
    assert rows > stream.boot > 0
    assert data.numeric.shape == (rows, len(contract.numeric))
    assert data.categorical.shape == (rows, len(contract.categorical))
    assert len(data.dicts) == rows and len(data.labels) == rows
    for spec in contract.specs:
        if spec.vocabulary:
            seen = set(data.categorical[:, contract.categorical.index(spec.name)])
            assert seen <= set(spec.vocabulary), (spec.name, seen - set(spec.vocabulary))
    if stream.task == "classification":
        classes = np.unique(data.labels)
        assert set(classes.tolist()) <= set(range(stream.classes))
        assert len(classes) >= 2
    else:
        assert np.isfinite(data.labels).all() and np.std(data.labels) > 0
    scored = rows - stream.boot
    assert all(0 < change < scored for change in stream.changes)
    assert stream.changes == sorted(stream.changes)


def test_families_with_other_drifts_build_other_rows() -> None:
    built = {
        name: generality.build(name, seed=0, segment=SEGMENT).data.labels
        for name in ("friedman", "friedman-lea", "friedman-gsg")
    }
    assert not np.allclose(built["friedman"], built["friedman-lea"])
    assert not np.allclose(built["friedman-lea"], built["friedman-gsg"])


def test_unseen_families_are_new_names() -> None:
    assert not set(generality.UNSEEN) & set(generality.FULL)
    assert set(generality.UNSEEN_SYNTHETIC) < set(generality.UNSEEN)
