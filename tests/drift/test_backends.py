"""The two backends agree on the same windows; the scipy one never loads alibi-detect."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from driftline.drift.detectors import correct, make_backend
from driftline.drift.monitor import DriftMonitor
from driftline.drift.monitor_config import MonitorConfig
from tests.conftest import REPO
from tests.drift.streams import dynamic_model, labeled, predictions, reference

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")


def test_the_scipy_backend_does_not_import_alibi_detect() -> None:
    """A deployment that cannot accept the BSL never loads alibi-detect (or torch)."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from driftline.drift.monitor_config import MonitorConfig
        from driftline.drift.detectors import make_backend
        from driftline.drift.monitor import DriftMonitor
        from driftline.drift.worker import DriftWorker
        from tests.drift.streams import dynamic_model, labeled, predictions, reference

        rng = np.random.default_rng(0)
        for detector in ("ks", "mmd-online", "cvm-online"):
            model = dynamic_model(drift={"detector": detector, "backend": "scipy"})
            mon = DriftMonitor("m", model.spec, reference(rng), make_backend("scipy"),
                               MonitorConfig.from_spec(model.spec.drift))
            mon.observe_predictions(predictions(rng, 500))
            mon.observe_labeled(labeled(rng, 1200))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("alibi_detect", "torch"))
        print(loaded)
        assert not loaded, loaded
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def backends() -> tuple[object, object]:
    return make_backend("alibi"), make_backend("scipy")


def test_window_tests_give_the_same_p_values(backends) -> None:
    alibi, scipy = backends
    rng = np.random.default_rng(5)
    ref = rng.normal(size=2000)
    codes = rng.choice(4, size=2000, p=[0.4, 0.3, 0.2, 0.1])
    ks_a, ks_s = alibi.ks(ref), scipy.ks(ref)
    chi_a, chi_s = alibi.chi2(codes, [0, 1, 2, 3]), scipy.chi2(codes, [0, 1, 2, 3])
    for shift in (0.0, 0.05, 0.2, 0.5):
        window = rng.normal(shift, 1.0, size=400)
        a, s = ks_a.score(window), ks_s.score(window)
        assert a.p_value == pytest.approx(s.p_value, rel=1e-5, abs=1e-30)
        assert a.statistic == pytest.approx(s.statistic, rel=1e-6)
    for probs, extra in (
        ([0.4, 0.3, 0.2, 0.1], None),
        ([0.2, 0.3, 0.3, 0.2], None),
        ([0.5, 0.5, 0.0, 0.0], None),
        ([0.4, 0.3, 0.2, 0.1], 4),
    ):
        window = rng.choice(4, size=400, p=probs)
        if extra is not None:
            window[:40] = extra  # a category the reference never had
        a, s = chi_a.score(window), chi_s.score(window)
        assert a.p_value == pytest.approx(s.p_value, rel=1e-5, abs=1e-30)
        assert a.statistic == pytest.approx(s.statistic, rel=1e-5)


def test_monitors_on_both_backends_find_the_same_drift(backends) -> None:
    alibi, scipy = backends
    model = dynamic_model(drift={"expectedRunTime": 5000})
    config = MonitorConfig.from_spec(model.spec.drift)
    ref = reference(np.random.default_rng(1))
    mons = [DriftMonitor("agree", model.spec, ref, b, config) for b in (alibi, scipy)]
    rng = np.random.default_rng(2)
    stream = predictions(rng, 1600) + predictions(rng, 1600, shift={"x1": 0.3}, start=1600)
    found = [m.observe_predictions(stream) for m in mons]
    assert [d.trigger for d in found[0]] == [d.trigger for d in found[1]]
    assert [d.features for d in found[0]] == [d.features for d in found[1]]
    assert any(d.kind == "covariate" for d in found[0])
    for a, s in zip(found[0], found[1], strict=True):
        assert a.p_value == pytest.approx(s.p_value, rel=1e-4, abs=1e-30)
    # The concept detectors run the same statistic on the same errors.
    errors = labeled(rng, 1500, noise=0.05) + labeled(rng, 400, concept=1, noise=0.05, start=1500)
    hits = [[d.trigger for d in m.observe_labeled(errors) if d.kind == "concept"] for m in mons]
    assert hits[0] and hits[1]
    assert abs(int(hits[0][0][1:]) - int(hits[1][0][1:])) <= 10


def test_fdr_matches_alibi_detect() -> None:
    from alibi_detect.utils.statstest import fdr

    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.random(rng.integers(2, 12)) ** rng.integers(1, 6)
        drift, _ = fdr(p, q_val=0.05)
        assert correct(p, 0.05, "fdr").drift == bool(drift)


def test_tabulated_fet_is_alibi_detects_fet() -> None:
    from alibi_detect.cd import FETDriftOnline

    from driftline.drift.detectors.alibi_backend import tabulated_fet

    rng = np.random.default_rng(3)
    ref = (rng.random(500) < 0.15).reshape(-1, 1)
    kwargs = {"ert": 50, "window_sizes": [10, 40], "n_bootstraps": 2000, "verbose": False}
    np.random.seed(1)
    original = FETDriftOnline(ref, **kwargs)
    np.random.seed(1)
    exact = type("ExactReference", (tabulated_fet(),), {"reference_error": False})
    tabulated = exact(ref, **kwargs)
    np.testing.assert_array_equal(original.thresholds, tabulated.thresholds)
    np.testing.assert_array_equal(original.permit_probs, tabulated.permit_probs)
    stream = rng.random(200) < 0.2
    a = [original.predict(np.array([v]))["data"]["test_stat"] for v in stream]
    b = [tabulated.predict(np.array([v]))["data"]["test_stat"] for v in stream]
    np.testing.assert_allclose(np.array(a), np.array(b))


def test_alibi_online_state_stays_bounded(backends) -> None:
    alibi, _ = backends
    rng = np.random.default_rng(4)
    det = alibi.online_errors(rng.random(600) < 0.1, 500, [10, 50])
    for bit in rng.random(3000) < 0.1:
        det.update(np.array([float(bit)]))
    inner = det.detector  # type: ignore[attr-defined]
    assert len(inner.xs) <= 50 and len(inner.test_stats) <= 1


def test_alibi_refuses_an_ert_it_cannot_configure_and_the_monitor_goes_on(backends) -> None:
    from driftline.drift.detectors.alibi_backend import univariate_bootstraps

    assert univariate_bootstraps(2000, [50, 200, 500]) == 10_000
    with pytest.raises(ValueError, match="backend: scipy"):
        univariate_bootstraps(100_000, [50, 200, 500])
    alibi, _ = backends
    model = dynamic_model(drift={"expectedRunTime": 100_000})
    mon = DriftMonitor(
        "refused",
        model.spec,
        reference(np.random.default_rng(0)),
        alibi,
        MonitorConfig.from_spec(model.spec.drift),
    )
    assert mon.observe_labeled(labeled(np.random.default_rng(1), 1000)) == []
    assert mon.concept.disabled and not mon.concept.ready


def test_alibi_mmd_watches_the_inputs_of_a_monitor(backends) -> None:
    alibi, _ = backends
    model = dynamic_model(drift={"detector": "mmd-online", "expectedRunTime": 500})
    mon = DriftMonitor(
        "alibi-mmd",
        model.spec,
        reference(np.random.default_rng(0), n=600),
        alibi,
        MonitorConfig.from_spec(model.spec.drift),
    )
    rng = np.random.default_rng(1)
    mon.observe_predictions(predictions(rng, 300))
    found = mon.observe_predictions(predictions(rng, 200, shift={"x1": 2.0}, start=300))
    assert found and {d.detector for d in found} == {"alibi:MMDDriftOnline"}
    # Once the window holds only shifted rows, the shifted feature is the one named.
    assert all(d.features == ["x1"] for d in found if int(d.trigger[1:]) >= 320)
