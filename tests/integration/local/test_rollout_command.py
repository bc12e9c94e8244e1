"""`driftline rollout approve|abort` queues a decision for the running candidate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from driftline.local.cli import main
from driftline.local.runtime import RUNTIME_FILE, RuntimeInfo
from driftline.local.servers import RedisServer
from driftline.rollout.rollout_state import RolloutState
from driftline.rollout.snapshot import Command
from driftline.rollout.store import Record, RolloutStore

pytestmark = pytest.mark.integration


@pytest.fixture
def state_dir(tmp_path: Path, redis_server: RedisServer, unique: str) -> Path:
    info = RuntimeInfo(
        model=unique, namespace="demo", model_file="sea.yaml",
        kafka_bootstrap_servers="127.0.0.1:9", kafka_kind="tansu",
        redis_url=redis_server.url, mlflow_tracking_uri="http://127.0.0.1:9",
        inference_url=None, metrics_ports={}, pids={}, started_at=0.0,
    )  # fmt: skip
    (tmp_path / RUNTIME_FILE).write_text(json.dumps(dataclasses.asdict(info)))
    return tmp_path


def _pending(client: Any, store: RolloutStore) -> Command | None:
    data = client.get(store.command_key)
    return msgspec.json.decode(data, type=Command) if data else None


def test_abort_names_the_running_candidate(state_dir: Path, redis_client: Any, unique: str) -> None:
    store = RolloutStore("demo", unique)
    state = RolloutState(stage="canary", stable="3", candidate="4", weight=20)
    store.save(redis_client, Record(state=state))
    assert main(["rollout", "abort", "--state-dir", str(state_dir), "--reason", "bad look"]) == 0
    assert _pending(redis_client, store) == Command(action="abort", version="4", reason="bad look")
    # The driver takes it once.
    assert store.take_command(redis_client) is not None
    assert store.take_command(redis_client) is None


def test_approve_without_a_rollout_is_refused_and_queues_nothing(
    state_dir: Path, redis_client: Any, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RolloutStore("demo", unique)
    assert main(["rollout", "approve", "--state-dir", str(state_dir)]) == 1
    assert "no candidate is rolling out" in capsys.readouterr().err
    assert _pending(redis_client, store) is None
    # Naming the version is the person's explicit choice: it is queued as given.
    assert main(["rollout", "approve", "--state-dir", str(state_dir), "--version", "7"]) == 0
    assert _pending(redis_client, store) == Command(
        action="approve", version="7", reason="approve from CLI"
    )
