"""The monitor core: which records count, what each kind of drift looks like."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from prometheus_client import REGISTRY

from driftline.api.events import Prediction
from driftline.drift import metrics
from driftline.drift.detectors import make_backend
from driftline.drift.monitor import DriftMonitor
from driftline.drift.monitor_config import MonitorConfig
from driftline.drift.reference import parse_reference
from tests.drift.streams import dynamic_model, labeled, predictions, reference, reference_arrays


def monitor(
    name: str, seed: int = 0, task: str = "classification", **drift: object
) -> DriftMonitor:
    model = dynamic_model(name, drift={"expectedRunTime": 20_000, **drift}, task=task)
    ref = reference(np.random.default_rng(seed))
    config = MonitorConfig.from_spec(model.spec.drift)
    return DriftMonitor(name, model.spec, ref, make_backend("scipy"), config)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": labels.pop("model"), **labels}) or 0.0


def test_a_stream_like_the_reference_raises_nothing() -> None:
    mon = monitor("calm")
    rng = np.random.default_rng(11)
    assert mon.observe_predictions(predictions(rng, 4000)) == []
    assert mon.observe_labeled(labeled(rng, 3000)) == []
    assert sample(metrics.TESTS_TOTAL, model="calm", kind="covariate") == 10
    assert sample(metrics.DETECTED, model="calm", kind="covariate") == 0
    assert 0 < sample(metrics.P_VALUE, model="calm", kind="covariate", feature="x2") <= 1


def test_a_shifted_feature_is_named() -> None:
    mon = monitor("shifted")
    rng = np.random.default_rng(12)
    found = mon.observe_predictions(predictions(rng, 800, shift={"x2": 0.8}))
    # x2 feeds the model, so its outputs move too (the policy folds that into one event).
    assert sorted(d.kind for d in found) == ["covariate", "covariate", "prediction", "prediction"]
    found = [d for d in found if d.kind == "covariate"]
    assert all(d.features == ["x2"] for d in found)
    first = found[0]
    assert first.samples == 400 and first.window_start == 1000.0 and first.window_end == 1399.0
    assert first.p_value is not None and first.p_value < 0.01 / 4
    assert first.trigger == "r399"
    assert sample(metrics.FEATURE_DRIFT, model="shifted", kind="covariate", feature="x2") == 1
    assert sample(metrics.FEATURE_DRIFT, model="shifted", kind="covariate", feature="x1") == 0


def test_a_new_category_is_drift_and_a_quality_issue() -> None:
    mon = monitor("colors")
    rng = np.random.default_rng(13)
    batch = predictions(rng, 400)
    batch = [
        Prediction(**{**_fields(p), "features": {**p.features, "color": "purple"}})
        if i % 5 == 0
        else p
        for i, p in enumerate(batch)
    ]
    (found,) = mon.observe_predictions(batch)
    assert found.features == ["color"]
    assert sample(
        metrics.QUALITY_RATE, model="colors", feature="color", check="unseen_category"
    ) == pytest.approx(0.2)
    assert (
        sample(metrics.QUALITY_TOTAL, model="colors", feature="color", check="unseen_category")
        == 80
    )


def test_missing_and_out_of_range_values_are_counted_not_tested() -> None:
    mon = monitor("gaps")
    rng = np.random.default_rng(14)
    batch = predictions(rng, 400)
    batch = [
        Prediction(**{**_fields(p), "features": {**p.features, "x1": None if i % 80 else 50.0}})
        for i, p in enumerate(batch)
    ]
    assert mon.observe_predictions(batch) == []  # x1 has too few values to test
    rate = sample(metrics.QUALITY_RATE, model="gaps", feature="x1", check="missing")
    assert rate == pytest.approx(395 / 400)
    assert sample(metrics.QUALITY_TOTAL, model="gaps", feature="x1", check="out_of_range") == 5


def test_only_served_requests_count_as_inputs() -> None:
    mon = monitor("variants")
    rng = np.random.default_rng(15)
    # Shadow scores of shifted traffic never reach the input windows.
    assert mon.observe_predictions(predictions(rng, 800, shift={"x1": 2.0}, variant="shadow")) == []
    assert (
        sample(metrics.SKIPPED_TOTAL, model="variants", stream="predictions", reason="not_served")
        == 800
    )
    # Candidate-served requests are inputs, but not the serving version's outputs.
    found = mon.observe_predictions(predictions(rng, 400, shift={"x1": 2.0}, variant="candidate"))
    assert [d.kind for d in found] == ["covariate"]
    assert mon.outputs.window.count == 0


def test_outputs_that_move_alone_are_prediction_drift() -> None:
    mon = monitor("outputs")
    rng = np.random.default_rng(16)
    batch = [Prediction(**{**_fields(p), "output": 1.0}) for p in predictions(rng, 400)]
    (found,) = mon.observe_predictions(batch)
    assert found.kind == "prediction" and found.features == ["__output__"]
    assert found.detector == "scipy:chi2"


def test_a_new_labeling_rule_is_concept_drift() -> None:
    mon = monitor("concept")
    rng = np.random.default_rng(17)
    assert mon.observe_labeled(labeled(rng, 1500, noise=0.05)) == []
    assert mon.concept.ready
    found = mon.observe_labeled(labeled(rng, 600, concept=1, noise=0.05, start=1500))
    concept = [d for d in found if d.kind == "concept"]
    assert concept, found
    first_switched = int(concept[0].trigger[1:]) - 1500
    assert first_switched < 60  # error rate 5 % -> ~50 %: tens of samples
    assert concept[0].detector == "scipy:FETOnline"
    # The label mix is unchanged by this switch (both rules are balanced).
    assert not [d for d in found if d.kind == "label"]


def test_a_moved_label_mix_is_label_drift() -> None:
    mon = monitor("prior")
    rng = np.random.default_rng(18)
    calm = labeled(rng, 800, noise=0.0)
    assert mon.observe_labeled(calm) == []  # first window: the label reference
    skewed = [e for e in labeled(rng, 2000, noise=0.0, start=800) if e.label == 1.0][:400]
    found = mon.observe_labeled(skewed)
    assert "label" in [d.kind for d in found]


def test_regression_concept_drift_watches_the_loss() -> None:
    model = dynamic_model("reg", task="regression", drift={"expectedRunTime": 20_000})
    rng = np.random.default_rng(19)
    arrays = reference_arrays(rng)
    ref = parse_reference(arrays, model.spec.features, "1")
    mon = DriftMonitor(
        "reg", model.spec, ref, make_backend("scipy"), MonitorConfig.from_spec(model.spec.drift)
    )
    calm = labeled(rng, 1200)
    jitter = [e.__class__(**{**_fields(e), "label": e.output + rng.normal(0, 0.1)}) for e in calm]
    assert mon.observe_labeled(jitter) == []
    worse = labeled(rng, 600, start=1200)
    worse = [e.__class__(**{**_fields(e), "label": e.output + rng.normal(0, 1.0)}) for e in worse]
    concept = [d for d in mon.observe_labeled(worse) if d.kind == "concept"]
    assert concept and concept[0].detector == "scipy:CVMOnline"


@pytest.mark.parametrize("detector", ["mmd-online", "cvm-online"])
def test_online_input_detectors_name_the_shifted_feature(detector: str) -> None:
    mon = monitor(f"online-{detector}", detector=detector)
    rng = np.random.default_rng(20)
    assert [d.kind for d in mon.observe_predictions(predictions(rng, 1000))] == []
    found = mon.observe_predictions(predictions(rng, 300, shift={"x3": 2.0}, start=1000))
    assert found and found[0].features == ["x3"]
    assert int(found[0].trigger[1:]) - 1000 < 60


def _fields(event: object) -> dict[str, object]:
    return {f: getattr(event, f) for f in event.__struct_fields__}  # type: ignore[attr-defined]


def test_a_moved_mean_is_a_data_quality_alarm_naming_the_feature() -> None:
    mon = monitor("quality", dataQuality={"window": 100, "sigmas": 4})
    rng = np.random.default_rng(21)
    calm = mon.observe_predictions(predictions(rng, 2000))
    assert [d for d in calm if d.kind == "data-quality"] == []
    # x3's mean moves by 0.6 baseline stds: 6 standard errors of a 100-value mean.
    found = mon.observe_predictions(predictions(rng, 100, shift={"x3": 0.6}, start=2000))
    quality = [d for d in found if d.kind == "data-quality"]
    assert len(quality) == 1
    assert quality[0].features == ["x3"] and quality[0].detector == "mean-shift"
    assert quality[0].score > 4 and quality[0].samples == 100
    assert sample(metrics.MEAN_SHIFT, model="quality", feature="x3") > 4
    assert sample(metrics.QUALITY_ALARM_TOTAL, model="quality", feature="x3") == 1
    assert sample(metrics.MEAN_SHIFT, model="quality", feature="x1") < 4


def test_data_quality_alarms_are_exported_from_zero_per_watched_feature() -> None:
    monitor("quality-zero", dataQuality={"window": 100, "sigmas": 4})
    for feature in ("x1", "x2", "x3"):
        labels = {"model": "quality-zero", "feature": feature}
        assert REGISTRY.get_sample_value(metrics.QUALITY_ALARM_TOTAL, labels) == 0


def test_without_data_quality_in_the_spec_no_mean_is_watched() -> None:
    mon = monitor("no-quality")
    assert mon.means is None


def test_rows_a_policy_acted_on_are_counted_per_feature() -> None:
    mon = monitor("flags")
    rng = np.random.default_rng(22)
    batch = predictions(rng, 10)
    batch[3] = msgspec.structs.replace(batch[3], flags={"x1": "clip"})
    batch[4] = msgspec.structs.replace(batch[4], flags={"x1": "clip", "color": "flag"})
    mon.observe_predictions(batch)
    assert sample(metrics.FLAGGED_TOTAL, model="flags", feature="x1", action="clip") == 2
    assert sample(metrics.FLAGGED_TOTAL, model="flags", feature="color", action="flag") == 1
