"""`python -m driftline.drift` as the operator and the local runtime start it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from driftline.local.servers import free_port
from tests.conftest import REPO
from tests.drift.streams import predictions
from tests.integration.drift.conftest import Harness, wait_for

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def test_the_process_serves_probes_exports_gauges_and_stops_on_sigterm(
    harness: Harness, calm_reference, tmp_path
) -> None:
    harness.registry.register(calm_reference, champion=True)
    model = harness.model(backend="scipy")
    port = free_port()
    env = {
        **os.environ,
        "DRIFTLINE_DRIFT_MODEL_FILE": str(harness.write(model)),
        "DRIFTLINE_DRIFT_METRICS_PORT": str(port),
        "DRIFTLINE_DRIFT_REFERENCE_REFRESH_SECONDS": "1",
        "DRIFTLINE_DRIFT_THRESHOLD_CACHE_DIR": str(tmp_path / "thresholds"),
        "MLFLOW_ENABLE_TELEMETRY": "false",
    }
    log = (tmp_path / "drift.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.drift"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, 120, "/readyz")
        assert get(f"{base}/healthz")[0] == 200
        rng = np.random.default_rng(6)
        harness.send(model.topics.predictions, predictions(rng, 800, shift={"x1": 1.0}))
        wait_for(lambda: bool(harness.events(model, seconds=5)), 90, "a drift event")
        _, text = get(f"{base}/metrics")
        name = model.name
        for line in (
            f'driftline_drift_feature_detected{{feature="x1",kind="covariate",model="{name}"}} 1.0',
            f'driftline_drift_detected{{kind="covariate",model="{name}"}} 1.0',
            f'driftline_drift_events_total{{kind="covariate",model="{name}"}} 1.0',
            f'driftline_drift_reference_version{{model="{name}",version="1"}} 1.0',
            f'driftline_drift_quality_rate{{check="missing",feature="x2",model="{name}"}} 0.0',
        ):
            assert line in text, line
        assert f'driftline_drift_p_value{{feature="color",kind="covariate",model="{name}"}}' in text
        assert f'driftline_drift_score{{feature="x1",kind="covariate",model="{name}"}}' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    assert "drift monitor stopped" in (tmp_path / "drift.log").read_text()
