"""`python -m driftline.rollout` runs as the local runtime starts it, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.local.servers import RedisServer, free_port
from driftline.rollout import read_rollout
from tests.integration.rollout.support import ModelFactory, Traffic, aliases

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def test_the_process_promotes_a_candidate_and_stops_cleanly(
    rollout_model: ModelFactory,
    registry: Any,
    redis_server: RedisServer,
    redis_client: Any,
    tmp_path: Path,
) -> None:
    # The YAML names an unreachable Redis: the environment override must win.
    model = rollout_model(
        redis_url="redis://127.0.0.1:1/0",
        strategy="canary",
        canary={"steps": [100], "stepSeconds": 0.2},
    )
    port = free_port()
    env = {
        **os.environ,
        "DRIFTLINE_ROLLOUT_MODEL_FILE": str(tmp_path / "model.yaml"),
        "DRIFTLINE_ROLLOUT_REDIS_URL": redis_server.url,
        "DRIFTLINE_ROLLOUT_METRICS_PORT": str(port),
        "DRIFTLINE_ROLLOUT_TICK_SECONDS": "0.2",
    }
    log = open(tmp_path / "rollout.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.rollout"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while get(f"{base}/readyz")[0] != 200:
            assert proc.poll() is None, (tmp_path / "rollout.log").read_text()
            assert time.monotonic() < deadline, "not ready in 60s"
            time.sleep(0.2)
        assert get(f"{base}/healthz")[0] == 200

        registry.set_registered_model_alias(model.name, ALIAS_CANDIDATE, "2")
        traffic = Traffic(redis_client, model)
        deadline = time.monotonic() + 30
        state = read_rollout(redis_client, "test", model.name)
        while state is None or state.stage != "promoted":
            assert time.monotonic() < deadline, f"not promoted: {state}"
            traffic.stage("canary", "1", "2")
            time.sleep(0.3)
            state = read_rollout(redis_client, "test", model.name)
        assert aliases(registry, model.name) == {ALIAS_CHAMPION: "2"}
        status, text = get(f"{base}/metrics")
        assert status == 200
        assert 'driftline_rollout_transitions_total{from_stage="canary"' in text

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
    assert "stopped" in (tmp_path / "rollout.log").read_text()


def test_the_process_refuses_a_missing_model_file(tmp_path: Path) -> None:
    env = {**os.environ, "DRIFTLINE_ROLLOUT_MODEL_FILE": str(tmp_path / "nope.yaml")}
    done = subprocess.run(
        [sys.executable, "-m", "driftline.rollout"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot start" in done.stderr and "nope.yaml" in done.stderr
