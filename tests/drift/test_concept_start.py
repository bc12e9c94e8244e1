"""No concept drift at start-up: a steady error stream stays within the ERT's budget.

The concept detector takes its error reference from the serving model's first
labeled examples and watches every later one. That reference is a sample: its error
count scatters around the model's true rate. A detector that treats it as exact
alarms far more often than its expected run time (ERT) allows whenever the count
came out low, and it does so from the first windows after the reference. Here each
seed is one start of the monitor: a reference and a stream drawn from the same
Bernoulli error rate, fed in batches the way `DriftMonitor.observe_labeled` feeds
`ConceptWatch`; over many starts the share with a false alarm in the first samples
must stay within what the ERT allows.

A model with a 3 % error rate and a reference of 300 examples (about 9 errors) makes
the reference's scatter large: alibi-detect's thresholds, simulated against the
observed count alone, alarmed in 9.7 % of starts within 300 samples where the ERT
allows 5.8 %; simulated over the references the rate could have produced, 7.2 %
(within the binomial noise of 600 starts).
"""

from __future__ import annotations

import numpy as np
import pytest

from driftline.drift.detectors import make_backend
from driftline.drift.labels import ConceptWatch
from driftline.drift.monitor_config import MonitorConfig

ERROR_RATE = 0.03
ERT = 5000
WATCHED = 300
"""Samples watched after the reference, per start."""
STARTS = 600
CONFIG = MonitorConfig(ert=ERT, online_windows=[10, 40], concept_reference=300)


def false_alarm_share(backend_name: str, cache_dir: object) -> tuple[float, float]:
    """Share of starts with an alarm in the first `WATCHED` samples, and the budget."""
    backend = make_backend(backend_name, cache_dir)  # type: ignore[arg-type]
    alarmed = 0
    for seed in range(STARTS):
        rng = np.random.default_rng(seed)
        watch = ConceptWatch("m", "1", "classification", backend, CONFIG)
        total = CONFIG.concept_reference + WATCHED
        errors = (rng.random(total) < ERROR_RATE).astype(np.float64)
        found, at = [], 0
        while at < total:  # batches of labeled examples as the worker consumes them
            size = int(rng.integers(1, 64))
            batch = errors[at : at + size]
            ts = np.arange(at, at + batch.size, dtype=np.float64)
            found += watch.observe(batch, ts, [f"r{i}" for i in range(at, at + batch.size)])
            at += batch.size
        assert watch.ready
        alarmed += bool(found)
    budget = 1 - (1 - 1 / ERT) ** WATCHED
    return alarmed / STARTS, budget


@pytest.mark.parametrize("backend_name", ["scipy", "alibi"])
def test_a_steady_error_stream_gives_no_alarm_beyond_the_budget(
    backend_name: str, tmp_path: object
) -> None:
    share, budget = false_alarm_share(backend_name, tmp_path)
    # Binomial noise of STARTS starts: the bound is the budget plus three of its SDs.
    bound = budget + 3 * np.sqrt(budget * (1 - budget) / STARTS)
    assert share <= bound, f"{share:.3f} of starts alarmed; the ERT allows {budget:.3f}"
