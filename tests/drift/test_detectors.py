"""The scipy backend's statistics are the textbook ones, and its thresholds hold the ERT."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import cramervonmises_2samp, fisher_exact

from driftline.drift.detectors import ThresholdCache, correct, make_backend
from driftline.drift.detectors.calibrate import alarms
from driftline.drift.detectors.online_cvm import CVMOnline, _null_moments, _RankWindows
from driftline.drift.detectors.online_fet import FETOnline, _ema, _fet_table
from driftline.drift.detectors.online_mmd import MMDOnline


def test_bonferroni_divides_alpha_by_the_features() -> None:
    verdict = correct(np.array([0.004, 0.02, 0.6]), 0.03, "bonferroni")
    assert verdict.threshold == pytest.approx(0.01)
    assert verdict.drifted == (0,)
    assert not correct(np.array([0.011, 0.5]), 0.02, "bonferroni").drift


def test_fdr_steps_up_to_the_largest_passing_rank() -> None:
    # Sorted: 0.001 < 0.05*1/4, 0.02 > 0.05*2/4 = 0.025? no: 0.02 < 0.025, 0.04 > 0.0375.
    p = np.array([0.04, 0.001, 0.9, 0.02])
    verdict = correct(p, 0.05, "fdr")
    assert verdict.drifted == (1, 3)
    assert verdict.threshold == pytest.approx(0.025)
    assert not correct(np.array([0.3, 0.6]), 0.05, "fdr").drift


def test_incremental_cvm_equals_the_two_sample_statistic() -> None:
    rng = np.random.default_rng(1)
    n, windows = 300, [20, 60]
    ref = np.sort(rng.normal(size=n))
    stream = rng.normal(0.3, 1.2, size=250)
    state = _RankWindows(n, 1, windows)
    for value in stream:
        out = state.push(np.array([np.searchsorted(ref, value)]))
    for k, m in enumerate(windows):
        mu, sd = _null_moments(n, m)
        expected = (cramervonmises_2samp(ref, stream[-m:]).statistic - mu) / sd
        assert out[k, 0] == pytest.approx(expected, rel=1e-9)


def test_fet_table_holds_fishers_one_sided_p_values() -> None:
    n, errors, w = 400, 37, 30
    table = _fet_table(n, errors, w)
    for c in (0, 3, 9, 17, 30):
        _, p = fisher_exact([[c, w - c], [errors, n - errors]], alternative="greater")
        assert 1 - table[c] == pytest.approx(p, rel=1e-6, abs=1e-12)


def test_alarm_replay_matches_the_live_detector() -> None:
    """Calibration replays a resetting detector exactly (no smoothing to restart)."""
    rng = np.random.default_rng(2)
    det = FETOnline(rng.random(600) < 0.2, ert=300, window_sizes=[15, 60], lam=1.0, seed=3)
    bits = (rng.random(20_000) < 0.22).astype(np.float64)
    live = len(det.update_many(bits[:, None]))
    csum = np.concatenate([[0], np.cumsum(bits)]).astype(np.int64)
    stats = np.full((2, 1, bits.size), np.nan, dtype=np.float32)
    for k, w in enumerate(det.windows):
        stats[k, 0, w - 1 :] = _ema(det.tables[k][csum[w:] - csum[:-w]], 1.0)
    assert live > 5
    assert alarms(stats, det.windows, det.threshold) == live


def run_length(detector: object, samples: np.ndarray) -> float:
    hits = detector.update_many(samples)  # type: ignore[attr-defined]
    return len(samples) / max(len(hits), 1)


def test_online_detectors_hold_their_expected_run_time() -> None:
    """Over references and streams, the mean run length lands near the ERT (within 2x)."""
    ert, lengths = 400, []
    for i in range(3):
        rng = np.random.default_rng(100 + i)
        fet = FETOnline(rng.random(800) < 0.1, ert, [10, 40, 100], seed=i)
        lengths.append(run_length(fet, (rng.random(12_000) < 0.1)[:, None].astype(float)))
        cvm = CVMOnline(rng.normal(size=(300, 2)), ert, [20, 60], seed=i)
        lengths.append(run_length(cvm, rng.normal(size=(8000, 2))))
        mmd = MMDOnline(rng.normal(size=(400, 3)), ert, 20, seed=i)
        lengths.append(run_length(mmd, rng.normal(size=(8000, 3))))
    mean = float(np.mean(lengths))
    assert ert / 2 < mean < ert * 2, lengths


def test_input_detectors_hold_their_expected_run_time_on_ten_features() -> None:
    """The input-shift benchmark's setting (10 features, window 20, ERT 500): the run
    length measured on calm data is the ERT's (within 1.5x), the false-alarm budget at
    which the benchmark compares delays."""
    ert = 500
    for i in range(2):
        rng = np.random.default_rng(200 + i)
        reference = rng.normal(size=(1000, 10))
        calm = rng.normal(size=(15_000, 10))
        mmd = MMDOnline(reference, ert, 20, seed=i)
        cvm = CVMOnline(reference, ert, [20], seed=i)
        lengths = [run_length(mmd, calm), run_length(cvm, calm)]
        assert all(ert / 1.5 < n < ert * 1.5 for n in lengths), lengths


def test_online_detectors_see_a_shift_within_tens_of_samples() -> None:
    rng = np.random.default_rng(7)
    fet = FETOnline(rng.random(1000) < 0.05, 5000, [25, 100, 250])
    bits = np.concatenate([rng.random(2000) < 0.05, rng.random(2000) < 0.3]).astype(float)
    hits = [h for h in fet.update_many(bits[:, None]) if h >= 2000]
    assert hits and hits[0] - 2000 < 60
    mmd = MMDOnline(rng.normal(size=(1000, 5)), 5000, 20)
    x = rng.normal(size=(3000, 5))
    x[2000:, 1] += 1.5
    hits = [h for h in mmd.update_many(x) if h >= 2000]
    assert hits and hits[0] - 2000 < 60
    cvm = CVMOnline(rng.normal(size=(600, 5)), 5000, [30])
    hits = [h for h in cvm.update_many(x) if h >= 2000]
    assert hits and hits[0] - 2000 < 60
    cvm.reset()
    assert cvm.update(x[2500]).features == ()  # a fresh window says nothing yet


def test_thresholds_come_back_from_the_cache(tmp_path) -> None:
    cache = ThresholdCache(tmp_path)
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(300, 1))
    first = CVMOnline(ref, 2000, [20, 80], cache=cache)
    again = CVMOnline(rng.normal(size=(300, 1)), 2000, [20, 80], cache=cache)  # rank based
    assert again.threshold == first.threshold
    assert again.setup_seconds < first.setup_seconds / 5
    (entry,) = tmp_path.glob("cvm-*.npz")
    entry.write_bytes(b"not an npz")  # a damaged entry is recomputed, not fatal
    assert CVMOnline(ref, 2000, [20, 80], cache=cache).threshold == pytest.approx(first.threshold)


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="use 'alibi' or 'scipy'"):
        make_backend("tensorflow")  # type: ignore[arg-type]
