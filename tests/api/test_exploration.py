"""Exploration: which entities explore (sticky, the epsilon share), what they get, the odds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.api.exploration import explores, propensity, uniform_label
from driftline.api.resource import SpecError, parse_dynamic_model
from driftline.api.routing import HASH_SPACE, sticky_bucket

MINIMAL = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "minimal.yaml"
ENTITIES = [f"customer-{i}" for i in range(20_000)]


@pytest.mark.parametrize("epsilon", [0.01, 0.05, 0.2])
def test_the_explored_share_is_epsilon(epsilon: float) -> None:
    share = sum(explores("credit", e, epsilon) for e in ENTITIES) / len(ENTITIES)
    # Binomial: three standard deviations.
    assert abs(share - epsilon) < 3 * (epsilon * (1 - epsilon) / len(ENTITIES)) ** 0.5


def test_an_entity_is_explored_or_not_for_good() -> None:
    first = [explores("credit", e, 0.1) for e in ENTITIES[:2000]]
    assert first == [explores("credit", e, 0.1) for e in ENTITIES[:2000]]
    # A larger epsilon keeps every entity that explored before (no reshuffle).
    wider = [explores("credit", e, 0.2) for e in ENTITIES[:2000]]
    assert all(w for f, w in zip(first, wider, strict=True) if f)
    # Another salt (or model) draws other entities.
    salted = [explores("credit", e, 0.1, salt="2") for e in ENTITIES[:2000]]
    assert salted != first


def test_exploration_does_not_follow_the_canary() -> None:
    """The explore hash is salted apart from the canary's: a 20 % canary's entities
    explore at the same rate as the others."""
    on_canary = [e for e in ENTITIES if sticky_bucket(e) < 0.2 * HASH_SPACE]
    share = sum(explores("credit", e, 0.1) for e in on_canary) / len(on_canary)
    assert abs(share - 0.1) < 0.02


def test_the_uniform_label_is_uniform_and_fixed_per_entity() -> None:
    counts = Counter(uniform_label("credit", e, 4) for e in ENTITIES)
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(n / len(ENTITIES) - 0.25) < 0.02 for n in counts.values())
    assert uniform_label("credit", "customer-7", 4) == uniform_label("credit", "customer-7", 4)


def test_propensity_of_the_served_label() -> None:
    # uniform over K=2 with epsilon 0.1: the model's label 0.95, the other 0.05
    assert propensity(1, 1, 0.1, 2) == pytest.approx(0.95)
    assert propensity(0, 1, 0.1, 2) == pytest.approx(0.05)
    # baseline: its label gets epsilon, the model's 1 - epsilon, both where they agree
    assert propensity(0, 1, 0.1, 2, "baseline", baseline_label=0) == pytest.approx(0.1)
    assert propensity(1, 1, 0.1, 2, "baseline", baseline_label=0) == pytest.approx(0.9)
    assert propensity(1, 1, 0.1, 2, "baseline", baseline_label=1) == pytest.approx(1.0)
    # a distribution over the labels, for any model label
    for policy, baseline in (("uniform", None), ("baseline", 2)):
        total = sum(propensity(a, 1, 0.2, 3, policy, baseline) for a in range(3))
        assert total == pytest.approx(1.0)


def test_off_by_default_and_for_classification_only() -> None:
    model_doc: dict[str, Any] = yaml.safe_load(MINIMAL.read_text())
    assert parse_dynamic_model(model_doc).spec.training.exploration is None
    model_doc["spec"].setdefault("training", {})["exploration"] = {"epsilon": 0.05}
    exploration = parse_dynamic_model(model_doc).spec.training.exploration
    assert exploration is not None
    assert (exploration.policy, exploration.sticky_by, exploration.max_weight) == (
        "uniform", "entity", 20.0,
    )  # fmt: skip
    model_doc["spec"]["model"]["task"] = "regression"
    with pytest.raises(SpecError, match=r"training\.exploration"):
        parse_dynamic_model(model_doc)
