"""The DynamicModel contract: samples are valid, bad specs are refused with a fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from driftline.api import SpecError, load_dynamic_model, parse_dynamic_model
from driftline.api.crd import dynamic_model_crd
from driftline.api.spec import TopicsSpec

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "samples").glob("*.yaml"))


def crd_validator() -> jsonschema.Draft4Validator:
    # Structural OpenAPI v3 schemas use draft-4 style booleans for exclusiveMinimum.
    schema = dynamic_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(schema)


def sample(name: str = "minimal.yaml") -> dict[str, Any]:
    path = next(p for p in SAMPLES if p.name == name)
    return dict(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_is_valid(path: Path) -> None:
    model = load_dynamic_model(path)
    assert model.spec.features
    raw = yaml.safe_load(path.read_text())
    errors = list(crd_validator().iter_errors(raw))
    assert not errors, [e.message for e in errors]
    # What the models fill in (defaults) is valid against the CRD too.
    assert not list(crd_validator().iter_errors(model.to_manifest()))


def test_defaults_are_filled_in() -> None:
    model = parse_dynamic_model(sample())
    spec = model.spec
    assert spec.model.task == "classification"
    assert spec.model.learner.hidden == [64, 32]
    assert spec.rollout.canary.steps == [5, 20, 50, 100]
    assert spec.training.ewc.lambda_ == 50.0
    assert model.topics == TopicsSpec.for_model("churn")
    assert spec.input_width == 1 + 1 + 16


def test_lambda_is_spelled_as_in_yaml() -> None:
    raw = sample()
    raw["spec"]["training"] = {"ewc": {"lambda": 7}}
    assert parse_dynamic_model(raw).spec.training.ewc.lambda_ == 7
    dumped = parse_dynamic_model(raw).to_manifest()
    assert dumped["spec"]["training"]["ewc"] == {"lambda": 7.0}


def _with(path: str, value: Any) -> dict[str, Any]:
    """The minimal sample with one field (dotted path, [i] for list items) changed."""
    raw = copy.deepcopy(sample())
    node: Any = raw
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


_DELETE = object()

# (change, where the message must point, words of the fix)
BAD_SPECS = [
    ("spec.features", [], "spec.features", "at least 1"),
    ("spec.features[0].name", "2fast", "spec.features[0].name", "pattern"),
    ("spec.features[1]", {"name": "tenure_months"}, "spec.features", "listed twice"),
    ("spec.features[2].hashBuckets", 1, "spec.features[2].hashBuckets",
     "greater than or equal to 2"),
    ("spec.features[0].hashBuckets", 8, "spec.features[0]", "categorical features only"),
    ("spec.model.task", "ranking", "spec.model.task", "'classification' or 'regression'"),
    ("spec.model.learner", {"type": "plugin"}, "spec.model.learner", "needs learner.entrypoint"),
    ("spec.model.initial", {"uri": "m.pkl", "format": "pickle"}, "spec.model.initial.format",
     "'onnx', 'skops', 'xgboost', 'lightgbm' or 'torchscript'"),
    ("spec.model.initial", {"sample": "rows.csv"}, "spec.model.initial.uri",
     "required field is missing"),
    ("spec.inference.replicas", {"min": 5, "max": 2}, "spec.inference.replicas", "must not exceed"),
    ("spec.rollout.canary", {"steps": [50, 20, 100]}, "spec.rollout.canary", "rise and end at 100"),
    ("spec.rollout.canary", {"steps": [5, 20]}, "spec.rollout.canary", "end at 100"),
    ("spec.training.replay", {"fraction": 1.5}, "spec.training.replay.fraction", "less than 1"),
    ("spec.training", {"mode": "scheduled"}, "spec.training", "needs training.scheduleSeconds"),
    ("spec.drift.pValue", 0, "spec.drift.pValue", "greater than 0"),
    ("spec.redis.url", "localhost:6379", "spec.redis.url", "rediss?://"),
    ("spec.feast", {"redis": {"url": "feast-redis:6379,db=0"}}, "spec.feast.redis.url",
     "rediss?://"),
    ("spec.feast", {}, "spec.feast.redis", "required field is missing"),
    ("spec.kafka.topics", {"predictions": "a", "outcomes": "a", "labeled": "b", "control": "c"},
     "spec.kafka.topics", "four different topics"),
    ("spec.inference.batching.maxBatchSize", 0, "spec.inference.batching.maxBatchSize",
     "greater than or equal to 1"),
    ("spec.inference.replicaz", {"min": 1}, "spec.inference.replicaz", "unknown field"),
    ("spec.kafka", _DELETE, "spec.kafka", "required field is missing"),
    ("spec.rollout.stickyKey", "plan", "spec", "also a feature name"),
    ("spec.rollout.stickyKey", "features", "spec.rollout.stickyKey", "means something else"),
    ("spec.rollout.stickyKey", "request_id", "spec.rollout.stickyKey", "means something else"),
    ("spec.monitoring.segments", [{"name": "country"}], "spec.monitoring.segments",
     "names no feature"),
    ("spec.monitoring.segments", [{"name": "tenure_months"}], "spec.monitoring.segments",
     "give its bins"),
    ("spec.monitoring.segments", [{"name": "plan", "bins": [1]}], "spec.monitoring.segments",
     "bins apply to numeric"),
    ("spec.monitoring.segments", [{"name": "plan"}, {"name": "plan"}], "spec.monitoring.segments",
     "listed twice"),
    ("spec.monitoring.segments", [{"name": "tenure_months", "bins": [12, 6]}],
     "spec.monitoring.segments[0]", "must rise"),
    ("spec.monitoring.segments", [{"name": "plan", "bins": [1], "values": ["a"]}],
     "spec.monitoring.segments[0]", "not both"),
    ("spec.monitoring.segments", [{"name": "plan", "maxValues": 0}],
     "spec.monitoring.segments[0].maxValues", "greater than or equal to 1"),
    ("spec.rollout.analysis.maxSegmentDrop", 2, "spec.rollout.analysis.maxSegmentDrop",
     "less than or equal to 1"),
    ("spec.features[1].onInvalid", {"outOfRange": "clip"}, "spec.features[1].onInvalid.outOfRange",
     "needs min or max"),
    ("spec.features[1].onInvalid", {"outOfRange": "wrap"}, "spec.features[1].onInvalid.outOfRange",
     "'refuse', 'clip', 'impute' or 'flag'"),
    ("spec.features[1].onInvalid", {"missing": "clip"}, "spec.features[1].onInvalid.missing",
     "'refuse', 'impute' or 'flag'"),
    ("spec.features[1].onInvalid", {"missing": "impute"}, "spec.features[1].onInvalid",
     "impute needs imputeValue"),
    ("spec.features[1].onInvalid", {"missing": "impute", "imputeCategory": "a"},
     "spec.features[1].onInvalid.imputeCategory", "use imputeValue"),
    ("spec.drift.dataQuality", {"sigmas": 0}, "spec.drift.dataQuality.sigmas", "greater than 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "where", "fix"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS]
)
def test_bad_spec_is_refused_with_field_and_fix(
    path: str, value: Any, where: str, fix: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_dynamic_model(_with(path, value))
    problems = info.value.problems
    assert any(p.startswith(where) and fix in p for p in problems), problems


# Unknown fields are not in this list: a structural schema prunes them, and the API
# server refuses them only under strict field validation (kubectl's default).
STRUCTURAL = [b for b in BAD_SPECS if b[3] in {"at least 1", "pattern", "rediss?://",
                                                "greater than or equal to 2", "greater than 0",
                                                "greater than or equal to 1", "less than 1",
                                                "'classification' or 'regression'",
                                                "required field is missing",
                                                "'onnx', 'skops', 'xgboost', 'lightgbm' or "
                                                "'torchscript'"}]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "where", "fix"), STRUCTURAL, ids=[b[0] for b in STRUCTURAL]
)
def test_crd_schema_refuses_the_same(path: str, value: Any, where: str, fix: str) -> None:
    """What the schema can express, the API server refuses before the operator sees it."""
    errors = list(crd_validator().iter_errors(_with(path, value)))
    assert errors


def test_segments_and_the_worst_segment_gate() -> None:
    raw = sample()
    raw["spec"]["monitoring"] = {
        "segments": [
            {"name": "tenure_months", "bins": [6, 24]},
            {"name": "plan", "protected": True, "maxValues": 8},
        ],
        "fairness": {"maxParityGap": 0.05},
    }
    raw["spec"]["rollout"] = {"analysis": {"maxSegmentDrop": 0.03, "minSegmentLabeled": 100}}
    assert not list(crd_validator().iter_errors(raw))
    spec = parse_dynamic_model(raw).spec
    tenure, plan = spec.monitoring.segments
    assert (tenure.bins, tenure.protected, plan.max_values, plan.protected) == (
        [6, 24], False, 8, True,
    )  # fmt: skip
    assert spec.monitoring.fairness.max_parity_gap == 0.05
    assert spec.monitoring.fairness.max_opportunity_gap == 0.1
    assert spec.rollout.analysis.max_segment_drop == 0.03
    assert spec.rollout.analysis.min_segment_labeled == 100
    # By default nothing is segmented and no segment gates a rollout.
    default = parse_dynamic_model(sample()).spec
    assert default.monitoring.segments == [] and default.rollout.analysis.max_segment_drop is None


def test_wrong_kind_and_version_are_refused() -> None:
    raw = sample()
    raw["apiVersion"] = "driftline.io/v2"
    with pytest.raises(SpecError, match="apiVersion"):
        parse_dynamic_model(raw)


def test_load_needs_exactly_one_dynamic_model(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    text = yaml.safe_dump(sample())
    path.write_text(text + "---\n" + text)
    with pytest.raises(SpecError, match="exactly one DynamicModel"):
        load_dynamic_model(path)
    path.write_text("kind: [")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_dynamic_model(path)


def test_value_policies_are_checked_against_the_feature() -> None:
    def policy(**feature: Any) -> list[str]:
        raw = _with("spec.features[1]", {"name": "wage", **feature})
        try:
            parse_dynamic_model(raw)
        except SpecError as exc:
            return exc.problems
        return []

    clip = {"outOfRange": "clip"}
    assert policy(min=0, max=10, onInvalid=clip) == []
    assert policy(max=10, onInvalid={**clip, "missing": "impute", "imputeValue": 3}) == []
    assert (
        "within min and max"
        in policy(min=0, max=10, onInvalid={"missing": "impute", "imputeValue": 11})[0]
    )
    assert "clip is for numeric" in policy(type="categorical", vocabulary=["a"], onInvalid=clip)[0]
    assert (
        "needs a vocabulary"
        in policy(type="categorical", hashBuckets=8, onInvalid={"outOfRange": "flag"})[0]
    )
    assert (
        "must be in the vocabulary"
        in policy(
            type="categorical",
            vocabulary=["a"],
            onInvalid={"outOfRange": "impute", "imputeCategory": "b"},
        )[0]
    )
