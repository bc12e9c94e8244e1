"""A reference from live traffic: the serving version's own first predictions."""

from __future__ import annotations

import numpy as np

from driftline.drift.live_reference import LiveReference
from driftline.drift.monitor import DriftMonitor
from driftline.drift.monitor_config import MonitorConfig

from .streams import dynamic_model, predictions


def test_only_the_serving_version_s_own_predictions_count() -> None:
    rng = np.random.default_rng(0)
    model = dynamic_model()
    live = LiveReference("1", model.spec.features, rows=100)
    assert live.add(predictions(rng, 30, version="2")) == 0  # another version
    assert live.add(predictions(rng, 30, variant="shadow")) == 0  # not served by it
    assert live.add(predictions(rng, 60)) == 60
    assert not live.complete and "collecting from live traffic: 60 of 100" in live.note()
    assert live.add(predictions(rng, 60, start=60)) == 40  # up to `rows`, no more
    assert live.complete and live.note().startswith("live traffic: the first 100 predictions")

    reference = live.reference()
    assert reference.version == "1" and reference.rows == 100
    assert set(reference.numeric) | set(reference.categorical) == {
        f.name for f in model.spec.features
    }


def test_a_monitor_watches_against_it() -> None:
    from driftline.drift.detectors import make_backend

    rng = np.random.default_rng(1)
    model = dynamic_model()
    live = LiveReference("1", model.spec.features, rows=500)
    live.add(predictions(rng, 500))
    monitor = DriftMonitor(
        model.name, model.spec, live.reference(), make_backend("scipy"), MonitorConfig()
    )
    assert monitor.version == "1"
    monitor.observe_predictions(predictions(rng, 200, start=500))
