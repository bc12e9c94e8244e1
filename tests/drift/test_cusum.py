"""The Bernoulli CUSUM concept detector: its false alarms, its reaction, its choice in the spec."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.api import SpecError
from driftline.api.crd import dynamic_model_crd
from driftline.common.bernoulli_cusum import increments, statistic
from driftline.drift.detectors import ThresholdCache, make_backend
from driftline.drift.detectors.online_cusum import CUSUMOnline
from driftline.drift.monitor import DriftMonitor
from driftline.drift.monitor_config import MonitorConfig
from tests.drift.streams import dynamic_model, labeled, reference


def bits(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return (rng.random(n) < p).astype(float)[:, None]


def test_false_alarms_on_calm_streams_come_about_once_per_ert() -> None:
    """Over several references and 100,000 calm samples, the mean run length is near the ERT."""
    ert, samples, hits = 1000, 0, 0
    for i in range(5):
        rng = np.random.default_rng(200 + i)
        det = CUSUMOnline(rng.random(2000) < 0.15, ert, seed=i)
        hits += len(det.update_many(bits(rng, 20_000, 0.15)))
        samples += 20_000
    assert 0.6 * ert < samples / hits < 1.6 * ert, samples / hits


def test_the_threshold_grows_with_the_ert_also_past_what_is_simulated() -> None:
    rng = np.random.default_rng(3)
    ref = rng.random(1000) < 0.1
    levels = np.array([CUSUMOnline(ref, ert).thresholds for ert in (500, 5000, 50_000, 1_000_000)])
    assert (np.diff(levels, axis=0) > 0).all(), levels  # every alternative's
    # A likelihood-ratio CUSUM's run length grows about like exp(threshold).
    assert levels[-1] - levels[-2] == pytest.approx(np.log(20), abs=1.5), levels


def test_a_strong_rise_is_found_in_tens_of_samples_and_a_small_one_in_hundreds() -> None:
    rng = np.random.default_rng(7)
    det = CUSUMOnline(rng.random(1000) < 0.05, 5000)
    stream = np.concatenate([bits(rng, 2000, 0.05), bits(rng, 2000, 0.3)])
    hits = [h for h in det.update_many(stream) if h >= 2000]
    assert hits and hits[0] - 2000 < 60
    # 10 % -> 14 %, the rise of the benchmark's subtle SEA drift: evidence adds up.
    det, delays = CUSUMOnline(rng.random(2000) < 0.1, 5000), []
    for _ in range(20):
        det.reset()
        stream = np.concatenate([bits(rng, 2000, 0.1), bits(rng, 4000, 0.14)])
        hits = [h - 2000 for h in det.update_many(stream) if h >= 2000]
        delays.append(hits[0] if hits else 4000)
    assert np.median(delays) < 1000, delays


def test_the_statistic_rises_on_errors_falls_on_correct_answers_and_resets() -> None:
    rng = np.random.default_rng(5)
    det = CUSUMOnline(rng.random(500) < 0.2, 2000)
    stream = bits(rng, 3000, 0.25)
    seen = [det.update(x).statistic for x in stream]
    prev = [0.0, *seen[:-1]]
    for x, before, now in zip(stream[:, 0], prev, seen, strict=True):
        assert now >= 0.0
        assert (now > before) if x else (now <= before)
    # The live statistic is the one the threshold simulation computes.
    up = stream[:, 0] > 0.5
    simulated = statistic(
        increments(up, det.errors, det.n, det.learn, det.odds_ratios), det.thresholds
    )
    assert np.allclose(seen, simulated)
    det.reset()
    assert det.update(np.array([0.0])).statistic == 0.0


def test_the_statistic_is_the_simulated_one_also_after_the_rate_stops_learning() -> None:
    """Past `learn` samples the increments are kept, not recomputed: the same numbers."""
    rng = np.random.default_rng(11)
    det = CUSUMOnline(rng.random(60) < 0.2, 2000)
    stream = bits(rng, 3 * det.learn, 0.22)
    seen = [det.update(x).statistic for x in stream]
    up = stream[:, 0] > 0.5
    simulated = statistic(
        increments(up, det.errors, det.n, det.learn, det.odds_ratios), det.thresholds
    )
    assert np.allclose(seen, simulated)


def test_thresholds_come_back_from_the_cache(tmp_path) -> None:
    cache = ThresholdCache(tmp_path)
    ref = np.random.default_rng(4).random(1500) < 0.12
    first = CUSUMOnline(ref, 20_000, cache=cache)
    again = CUSUMOnline(ref, 20_000, cache=cache)
    assert again.thresholds == first.thresholds
    assert again.setup_seconds < first.setup_seconds / 5
    assert len(list(tmp_path.glob("cusum-*.npz"))) == 1
    longer = CUSUMOnline(ref, 40_000, cache=cache).thresholds  # another key
    assert all(a > b for a, b in zip(longer, first.thresholds, strict=True))


def test_the_spec_chooses_the_detector_and_refuses_it_on_alibi() -> None:
    assert MonitorConfig().concept_detector == "fet"
    model = dynamic_model("c", drift={"concept": {"detector": "cusum"}})
    assert MonitorConfig.from_spec(model.spec.drift).concept_detector == "cusum"
    assert MonitorConfig.from_spec(dynamic_model("f").spec.drift).concept_detector == "fet"
    with pytest.raises(SpecError, match=r"drift\.concept.*needs drift.backend 'scipy'"):
        dynamic_model("c", drift={"concept": {"detector": "cusum"}, "backend": "alibi"})
    with pytest.raises(SpecError, match=r"drift\.concept\.detector"):
        dynamic_model("c", drift={"concept": {"detector": "page-hinkley"}})
    schema = dynamic_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    drift = schema["properties"]["spec"]["properties"]["drift"]
    (rule,) = drift["x-kubernetes-validations"]
    assert "self.concept.detector != 'cusum'" in rule["rule"]


def test_a_monitor_with_the_cusum_finds_a_new_labeling_rule() -> None:
    model = dynamic_model(
        "cusum", drift={"expectedRunTime": 20_000, "concept": {"detector": "cusum"}}
    )
    config = MonitorConfig.from_spec(model.spec.drift)
    ref = reference(np.random.default_rng(0))
    mon = DriftMonitor("cusum", model.spec, ref, make_backend("scipy"), config)
    rng = np.random.default_rng(17)
    assert mon.observe_labeled(labeled(rng, 1500, noise=0.05)) == []
    found = mon.observe_labeled(labeled(rng, 600, concept=1, noise=0.05, start=1500))
    concept = [d for d in found if d.kind == "concept"]
    assert concept and concept[0].detector == "scipy:CUSUMOnline", found
    assert int(concept[0].trigger[1:]) - 1500 < 60
