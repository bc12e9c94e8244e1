"""`driftline demo --quick` end to end: the README's main job, judged by its own verdicts.

The demo starts every part as a process beside embedded Kafka-protocol, Redis and
MLflow servers, sends SEA traffic through the inference API and changes the world
half-way. Its verdicts are real measurements: after the switch the promoted model
must beat the frozen baseline clearly, and a broken candidate must be aborted at
its first canary step with stable answers unharmed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _percent(text: str) -> float:
    return float(text.rstrip(" %"))


@pytest.mark.timeout(900)
def test_quick_demo_learns_the_new_concept_and_rejects_a_broken_candidate(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "driftline.local.cli", "demo", "--quick", "--out", str(out)],
        cwd=tmp_path,  # its state directory (.driftline/) lands here
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    tail = (run.stdout + run.stderr)[-4000:]
    assert (out / "REPORT.md").exists(), tail
    verdicts = json.loads((out / "results.json").read_text())
    assert set(verdicts) == {"drift", "bad-candidate"}

    drift = verdicts["drift"]["summary"]
    assert verdicts["drift"]["passed"], drift
    assert drift["drift detected after"] != "not detected"
    served = _percent(drift["accuracy after promotion: served"])
    frozen = _percent(drift["accuracy after promotion: frozen baseline"])
    assert served >= frozen + 5, drift
    assert drift["errors / shed"] == "0 / 0", (drift, tail)

    bad = verdicts["bad-candidate"]["summary"]
    assert verdicts["bad-candidate"]["passed"], bad
    assert "rolled back" in bad["reason"]
    assert bad["errors / shed"] == "0 / 0", (bad, tail)

    assert (out / "drift.png").stat().st_size > 10_000
    assert run.returncode == 0, tail


@pytest.mark.timeout(900)
def test_a_static_model_is_imported_then_replaced_by_what_is_learned_beside_it(
    tmp_path: Path,
) -> None:
    """`demo --scenario migrate`: a gradient-boosted model (scikit-learn's, converted to
    ONNX) named in `spec.model.initial` is imported as version 1; after the change of
    concept a learned version is promoted over it and beats the imported model, frozen
    as the baseline, clearly."""
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "driftline.local.cli", "demo", "--quick", "--scenario", "migrate",
         "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )  # fmt: skip
    tail = (run.stdout + run.stderr)[-4000:]
    assert (out / "results.json").exists(), tail
    verdicts = json.loads((out / "results.json").read_text())
    migrate = verdicts["migrate"]["summary"]
    assert verdicts["migrate"]["passed"], (migrate, tail)
    assert migrate["version 1"].startswith("imported") and "onnx" in migrate["version 1"]
    served = _percent(migrate["accuracy after promotion: served"])
    frozen = _percent(migrate["accuracy after promotion: frozen baseline"])
    assert served >= frozen + 5, migrate
    assert migrate["errors / shed"] == "0 / 0", (migrate, tail)
    assert run.returncode == 0, tail
