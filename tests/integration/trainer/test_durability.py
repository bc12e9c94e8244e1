"""A killed trainer loses no example, learns none twice and registers no version twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from driftline.api import artifacts
from driftline.common.streams import CovariateShiftStream
from driftline.trainer.bootstrap import bootstrap
from driftline.trainer.checkpoint import from_bytes
from driftline.trainer.versions import TAG_PUBLISH_KEY, ModelVersions
from driftline.trainer.worker import TrainerWorker
from tests import polling

pytestmark = pytest.mark.integration

BOOTSTRAP_ROWS = 3000


def checkpoint_meta(case: Any) -> dict[str, Any] | None:
    path = case.settings.checkpoint_dir / "checkpoint.npz"
    return from_bytes(path.read_bytes())[1] if path.exists() else None


def registered(case: Any) -> list[Any]:
    client = MlflowClient(case.settings.connections.mlflow_tracking_uri)
    found = client.search_model_versions(f"name='{case.name}'")
    return sorted(found, key=lambda v: int(v.version))


def assert_lineage_is_whole(case: Any, final: dict[str, Any]) -> None:
    """Per partition, the versions' offset ranges and the unpublished rest tile [0, end)."""
    topic = case.topics.labeled
    ranges: dict[str, list[tuple[int, int]]] = {}
    for mv in registered(case)[1:]:  # version 1 is the bootstrap
        for part, (first, last) in json.loads(mv.tags[artifacts.TAG_OFFSETS]).items():
            ranges.setdefault(part, []).append((first, last))
    for part, (first, last) in final["worker"]["lineage"].items():
        ranges.setdefault(part, []).append((first, last))
    positions = {k: v for k, v in final["worker"]["positions"].items() if k.startswith(topic)}
    assert set(ranges) == set(positions)
    for part, spans in ranges.items():
        spans.sort()
        assert spans[0][0] == 0, (part, spans)
        for (_, last), (first, _) in pairwise(spans):
            assert first == last + 1, (part, spans)  # no gap, no overlap
        assert spans[-1][1] == positions[part] - 1, (part, spans)


def trainer_process(case: Any, log: Path) -> subprocess.Popen[bytes]:
    s = case.settings
    env = {
        **os.environ,
        "DRIFTLINE_TRAINER_MODEL_FILE": str(case.model_file),
        "DRIFTLINE_TRAINER_CHECKPOINT_DIR": str(s.checkpoint_dir),
        "DRIFTLINE_TRAINER_METRICS_PORT": "0",
        "DRIFTLINE_TRAINER_GATE_MIN_HOLDOUT": str(s.gate_min_holdout),
        "DRIFTLINE_TRAINER_GATE_MIN_ANCHOR": str(s.gate_min_anchor),
        "DRIFTLINE_TRAINER_CHECKPOINT_SECONDS": "1",
        "DRIFTLINE_TRAINER_CONSUME_MAX": "300",
        "DRIFTLINE_TRAINER_CONSUME_TIMEOUT": "0.2",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "driftline.trainer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.parametrize(
    "reclaim",
    [
        # A spot reclaim with its termination notice: SIGTERM, a clean stop in the grace period.
        signal.SIGTERM,
        # Without a notice (or past the grace period): the process is gone at once.
        signal.SIGKILL,
    ],
    ids=["sigterm", "sigkill"],
)
def test_reclaim_and_restart(
    trainer_case: Callable[..., Any], until: Any, tmp_path: Path, reclaim: signal.Signals
) -> None:
    case = trainer_case(
        CovariateShiftStream(seed=5),
        training={
            "publish": {"everySamples": 1500, "everySeconds": 300},
            "gate": {"holdoutFraction": 0.1, "maxRegression": 0.5},
        },
    )
    boot = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline.trainer",
            "--model-file",
            str(case.model_file),
            "bootstrap",
            "--stream",
            "covariate",
            "--seed",
            "5",
            "--samples",
            str(BOOTSTRAP_ROWS),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert boot.returncode == 0, boot.stderr
    assert boot.stdout.strip().splitlines()[-1] == "1"

    stream = CovariateShiftStream(seed=6, schedule=[(0, 1), (6000, 2)])
    case.produce(stream.take(6000))
    log = tmp_path / "trainer.log"
    first = trainer_process(case, log)
    try:
        until(lambda: len(registered(case)) >= 2, timeout=180, what="a published version")
    finally:
        first.send_signal(reclaim)
        stopped = first.wait(60)
    if reclaim == signal.SIGTERM:
        assert stopped == 0, log.read_text()[-3000:]  # stopped cleanly within the grace
    case.produce(stream.take(6000))  # more arrives while the trainer is down

    second = trainer_process(case, log)
    total = BOOTSTRAP_ROWS + 12_000

    def where_it_stopped() -> None:
        meta = checkpoint_meta(case) or {}
        print(
            f"checkpoint seq {meta.get('seq')}, staged {meta.get('worker', {}).get('staged_key')}, "
            f"versions {len(registered(case))}; the trainer's log:\n{log.read_text()[-5000:]}"
        )

    try:
        polling.wait_until(
            lambda: (
                (m := checkpoint_meta(case)) is not None
                and m["seq"] == total
                and m["worker"]["staged_key"] is None
            ),
            180,
            f"all {total} rows in a checkpoint",
            interval=0.25,
            on_timeout=where_it_stopped,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(60)
    assert code == 0, log.read_text()[-3000:]

    final = checkpoint_meta(case)
    assert final is not None and final["seq"] == total  # nothing lost, nothing learned twice
    versions = registered(case)
    keys = [v.tags[TAG_PUBLISH_KEY] for v in versions]
    assert len(keys) == len(set(keys)), keys
    assert_lineage_is_whole(case, final)


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


def test_crash_between_register_and_checkpoint(
    trainer_case: Callable[..., Any], run_worker: Any, until: Any
) -> None:
    stream = CovariateShiftStream(seed=7, schedule=[(0, 0), (3000, 1)])
    case = trainer_case(stream, training={"gate": {"holdoutFraction": 0.1, "maxRegression": 0.5}})
    boot = stream.take(3000)
    bootstrap(case.settings, boot.features(), boot.labels.astype(np.float32))
    case.produce(stream.take(2500))

    doomed = TrainerWorker(case.settings)
    register = doomed.versions.register

    def register_then_die(*args: Any, **kwargs: Any) -> str:
        register(*args, **kwargs)
        raise Crash  # registered in MLflow, not yet recorded in the checkpoint

    doomed.versions.register = register_then_die  # type: ignore[method-assign]
    doomed._shutdown = lambda: None  # type: ignore[method-assign]  # died: no final checkpoint
    with pytest.raises(Crash), run_worker(doomed):
        until(lambda: len(registered(case)) >= 2, what="the registration")
    doomed._consumer.close()  # leave the group without committing, as a dead process would
    doomed._producer = None
    staged = checkpoint_meta(case)
    assert staged is not None and staged["worker"]["staged_key"] is not None

    survivor = TrainerWorker(case.settings)
    with run_worker(survivor):
        until(
            lambda: survivor.progress.parent == "2" and survivor.progress.staged_key is None,
            what="recovery",
        )
    versions = registered(case)
    keys = [v.tags[TAG_PUBLISH_KEY] for v in versions]
    assert keys.count(staged["worker"]["staged_key"]) == 1
    assert len(keys) == len(set(keys))
    info = ModelVersions(case.settings.connections.mlflow_tracking_uri, case.name).by_alias(
        artifacts.ALIAS_CANDIDATE
    )
    assert info is not None and info.version == "2"
