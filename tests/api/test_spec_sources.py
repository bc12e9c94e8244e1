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
    assert rules == ["[has(self.aggregate), has(self.feast)].filter(x, x).size() == 1"]
    aggregate = source["properties"]["aggregate"]
    assert "self.function in ['count', 'rate']" in aggregate["x-kubernetes-validations"][0]["rule"]
    assert any("source.aggregate" in r["rule"] for r in feature["x-kubernetes-validations"])
    assert any("source.feast" in r["rule"] for r in feature["x-kubernetes-validations"])


FEAST = {
    "project": "fraud",
    "featureView": "user_stats",
    "name": "txn_count",
    "entityKeys": [{"joinKey": "user_id", "type": "int64"}],
}


def test_a_feast_feature_is_read_with_its_defaults() -> None:
    raw = with_features({"name": "txn_count", "source": {"feast": FEAST}})
    feature = parse_dynamic_model(raw).spec.features[-1]
    assert feature.source is not None and feature.source.feast is not None
    feast = feature.source.feast
    assert (feast.project, feast.feature_view, feast.name) == ("fraud", "user_stats", "txn_count")
    key = feast.entity_keys[0]
    assert (key.join_key, key.field, key.type) == ("user_id", "entity_id", "int64")
    assert (feast.max_age_seconds, feast.default, feature.source.on_unavailable) == (
        None,
        0.0,
        "default",
    )
    assert not list(crd_validator().iter_errors(raw))


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ({"feast": FEAST, "aggregate": {"function": "count"}}, "exactly one of aggregate, feast"),
        (
            {"feast": {**FEAST, "entityKeys": [{"joinKey": "user_id", "field": "user_id"}]}},
            "entity_id",
        ),
        (
            {"feast": {**FEAST, "entityKeys": [{"joinKey": "a"}, {"joinKey": "b"}]}},
            "entityKeys",
        ),
        ({"feast": {**FEAST, "entityKeys": []}}, "entityKeys"),
        ({"feast": {**FEAST, "maxAgeSeconds": 0}}, "maxAgeSeconds"),
        ({"feast": {**FEAST, "entityKeys": [{"joinKey": "u", "type": "float"}]}}, "type"),
        ({"feast": {k: v for k, v in FEAST.items() if k != "project"}}, "project"),
    ],
)
def test_bad_feast_sources_are_refused(source: dict[str, Any], says: str) -> None:
    raw = with_features({"name": "f", "source": source})
    with pytest.raises(SpecError, match=says):
        parse_dynamic_model(raw)
    if "aggregate" not in source:  # (that one is a CEL rule, checked by the API server)
        assert list(crd_validator().iter_errors(raw))  # the CRD schema refuses it too


def test_a_feast_feature_is_numeric() -> None:
    with pytest.raises(SpecError, match=r"source\.feast is numeric"):
        parse_dynamic_model(
            with_features({"name": "f", "type": "categorical", "source": {"feast": FEAST}})
        )
