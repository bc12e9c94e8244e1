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
    feast = source["properties"]["feast"]
    assert "entityKeys.all(" in feast["x-kubernetes-validations"][0]["rule"]
    key = feast["properties"]["entityKeys"]["items"]
    assert "self.field in ['features'" in key["x-kubernetes-validations"][0]["rule"]


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
            {"feast": {**FEAST, "entityKeys": [{"joinKey": "user_id", "field": "request_id"}]}},
            r"entityKeys\[0\]\.field: entityKeys\.field names a request field that means",
        ),
        (
            {"feast": {**FEAST, "entityKeys": [{"joinKey": "a"}, {"joinKey": "a", "field": "b"}]}},
            "entityKeys names a join key twice",
        ),
        (
            {"feast": {**FEAST, "entityKeys": [{"joinKey": f"k{i}"} for i in range(9)]}},
            "entityKeys",
        ),
        ({"feast": {**FEAST, "entityKeys": [{"joinKey": "u", "field": "user-id"}]}}, "field"),
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
    if "aggregate" not in source and "twice" not in says and "means" not in says:
        # (the others are CEL rules, checked by the API server)
        assert list(crd_validator().iter_errors(raw))  # the CRD schema refuses it too


def test_a_feast_feature_is_numeric() -> None:
    with pytest.raises(SpecError, match=r"source\.feast is numeric"):
        parse_dynamic_model(
            with_features({"name": "f", "type": "categorical", "source": {"feast": FEAST}})
        )


def test_join_keys_may_come_from_request_fields_of_any_name() -> None:
    keys = [
        {"joinKey": "user_id", "field": "customer", "type": "int64"},
        {"joinKey": "merchant_id", "field": "shop"},
    ]
    raw = with_features(
        {"name": "pairs", "source": {"feast": {**FEAST, "featureView": "pair", "entityKeys": keys}}}
    )
    feast = parse_dynamic_model(raw).spec.features[-1].source.feast  # type: ignore[union-attr]
    assert feast is not None
    assert [(k.join_key, k.field, k.type) for k in feast.entity_keys] == [
        ("user_id", "customer", "int64"),
        ("merchant_id", "shop", "string"),
    ]
    assert not list(crd_validator().iter_errors(raw))


def test_features_of_one_view_name_its_join_keys_alike() -> None:
    first = {"name": "a", "source": {"feast": FEAST}}
    # The same view looked up for another entity (another field) is fine ...
    other_field = [{"joinKey": "user_id", "type": "int64", "field": "payee"}]
    other = {"name": "b", "source": {"feast": {**FEAST, "entityKeys": other_field}}}
    parse_dynamic_model(with_features(first, other))
    # ... other join keys or types for the same view are not: the view has one entity key.
    for keys in ([{"joinKey": "user_id"}], [{"joinKey": "uid", "type": "int64"}]):
        second = {"name": "b", "source": {"feast": {**FEAST, "entityKeys": keys}}}
        with pytest.raises(SpecError, match=r"features\[\d+\]\.source\.feast\.entityKeys: "
                           r"feature view 'user_stats' has join keys"):  # fmt: skip
            parse_dynamic_model(with_features(first, second))


def test_a_join_key_field_is_no_feature_name() -> None:
    keys = [{"joinKey": "user_id", "field": "plan"}]
    with pytest.raises(SpecError, match=r"entityKeys\[0\]\.field: 'plan' is a feature name"):
        parse_dynamic_model(
            with_features({"name": "f", "source": {"feast": {**FEAST, "entityKeys": keys}}})
        )
