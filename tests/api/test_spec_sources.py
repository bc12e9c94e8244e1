"""Feature sources: a feature found at serving (a per-entity aggregate), not sent."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.api import SpecError, parse_dynamic_model
from driftline.api.crd import dynamic_model_crd
from tests.api.test_spec import crd_validator, sample


def with_features(*extra: dict[str, Any]) -> dict[str, Any]:
    raw = sample()
    raw["spec"]["features"] = [*raw["spec"]["features"], *extra]
    return raw


def test_an_aggregate_feature_is_read_with_its_defaults() -> None:
    raw = with_features({"name": "visits", "source": {"aggregate": {"function": "count"}}})
    feature = parse_dynamic_model(raw).spec.features[-1]
    assert feature.source is not None and feature.source.aggregate is not None
    aggregate = feature.source.aggregate
    assert (aggregate.function, aggregate.of, aggregate.window_seconds) == ("count", None, 3600)
    assert (aggregate.default, feature.source.on_unavailable) == (0.0, "default")
    assert not list(crd_validator().iter_errors(raw))


@pytest.mark.parametrize(
    ("feature", "says"),
    [
        ({"source": {}}, "exactly one of aggregate"),
        (
            {"type": "categorical", "source": {"aggregate": {"function": "count"}}},
            "source.aggregate is numeric",
        ),
        ({"source": {"aggregate": {"function": "mean"}}}, "need aggregate.of"),
        (
            {"source": {"aggregate": {"function": "sum", "of": "plan"}}},
            "'plan' is no numeric feature the client sends",
        ),
        (
            {"source": {"aggregate": {"function": "sum", "of": "nowhere"}}},
            "'nowhere' is no numeric feature",
        ),
        ({"source": {"aggregate": {"function": "count", "windowSeconds": 0}}}, "windowSeconds"),
        ({"source": {"aggregate": {"function": "median"}}}, "function"),
    ],
)
def test_bad_sources_are_refused_with_a_fix(feature: dict[str, Any], says: str) -> None:
    with pytest.raises(SpecError, match=says):
        parse_dynamic_model(with_features({"name": "agg", **feature}))


def test_a_sourced_feature_cannot_aggregate_another() -> None:
    first = {"name": "visits", "source": {"aggregate": {"function": "count"}}}
    second = {"name": "agg", "source": {"aggregate": {"function": "sum", "of": "visits"}}}
    with pytest.raises(SpecError, match="'visits' is no numeric feature the client sends"):
        parse_dynamic_model(with_features(first, second))


def test_the_schema_holds_the_same_rules_in_cel() -> None:
    schema = dynamic_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    feature = schema["properties"]["spec"]["properties"]["features"]["items"]
    source = feature["properties"]["source"]
    rules = [r["rule"] for r in source["x-kubernetes-validations"]]
    assert rules == ["[has(self.aggregate)].filter(x, x).size() == 1"]
    aggregate = source["properties"]["aggregate"]
    assert "self.function in ['count', 'rate']" in aggregate["x-kubernetes-validations"][0]["rule"]
    assert any("source.aggregate" in r["rule"] for r in feature["x-kubernetes-validations"])
