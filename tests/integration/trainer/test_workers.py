"""Two trainer ranks on a real broker: a killed rank loses no example and doubles none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from driftline.common.streams import CovariateShiftStream
from driftline.trainer.bootstrap import bootstrap
from tests.integration.trainer.test_durability import (
    assert_lineage_is_whole,
    checkpoint_meta,
    registered,
)

pytestmark = pytest.mark.integration

BOOT, FIRST, LATER = 2000, 3000, 3000


def group_process(case: Any, log: Path) -> subprocess.Popen[bytes]:
    """`python -m driftline.trainer` with training.workers: 2 starts both ranks itself."""
    env = {
        **os.environ,
        "DRIFTLINE_TRAINER_MODEL_FILE": str(case.model_file),
        "DRIFTLINE_TRAINER_CHECKPOINT_DIR": str(case.settings.checkpoint_dir),
        "DRIFTLINE_TRAINER_METRICS_PORT": "0",
        "DRIFTLINE_TRAINER_GATE_MIN_HOLDOUT": "100",
        "DRIFTLINE_TRAINER_GATE_MIN_ANCHOR": "50",
        "DRIFTLINE_TRAINER_CHECKPOINT_SECONDS": "1",
        "DRIFTLINE_TRAINER_CONSUME_MAX": "100",
        "DRIFTLINE_TRAINER_CONSUME_TIMEOUT": "0.2",
        "DRIFTLINE_TRAINER_GROUP_TIMEOUT": "20",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "driftline.trainer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def rank_pid(launcher: int, rank: int) -> int | None:
    """The process of `rank` among the launcher's children (from /proc)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DRIFTLINE_TRAINER_RANK={rank}".encode() in environ:
            return int(pid)
    return None


def end_offsets(case: Any) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": case.conn.bootstrap_servers, "group.id": "probe"})
    try:
        topic = case.topics.labeled
        return {
            f"{topic}:{p}": consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(2)
        }
    finally:
        consumer.close()


@pytest.mark.slow
@pytest.mark.chaos
def test_a_killed_rank_rejoins_from_the_checkpoint(
    trainer_case: Callable[..., Any], until: Any, tmp_path: Path
) -> None:
    case = trainer_case(
        CovariateShiftStream(seed=5),
        training={
            "workers": 2,
            "publish": {"everySamples": 1500, "everySeconds": 300},
            "gate": {"holdoutFraction": 0.1, "maxRegression": 0.5},
        },
    )
    # Bootstrapped on one segment, trained on the next: the new rows carry something the
    # first version lacks, so the gate has a version to publish (a strict "beats").
    stream = CovariateShiftStream(seed=6, schedule=[(0, 0), (BOOT, 1)])
    boot = stream.take(BOOT)
    bootstrap(case.settings, boot.features(), boot.labels.astype(np.float32))
    case.produce(stream.take(FIRST))
    log = tmp_path / "group.log"
    group = group_process(case, log)
    later = threading.Thread(target=case.produce, args=(stream.take(LATER),))
    try:
        # Rows flowing, some learned and checkpointed: kill rank 1 outright.
        until(
            lambda: (m := checkpoint_meta(case)) is not None and m["seq"] >= BOOT + 500,
            timeout=120,
            what="a first checkpoint with rows",
        )
        later.start()
        victim = rank_pid(group.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        at_kill = checkpoint_meta(case)
        assert at_kill is not None and at_kill["seq"] < BOOT + FIRST + LATER  # work was left
        later.join(60)
        total = BOOT + FIRST + LATER
        until(
            lambda: (
                (m := checkpoint_meta(case)) is not None
                and m["seq"] >= total
                and m["worker"]["staged_key"] is None
                and len(registered(case)) >= 2
            ),
            timeout=120,
            what=f"all {total} rows in a checkpoint and a version published",
        )
    finally:
        group.send_signal(signal.SIGTERM)
        code = group.wait(60)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "restarting all 2" in text, text[-3000:]  # the group was re-formed
    final = checkpoint_meta(case)
    assert final is not None
    assert final["seq"] == total  # nothing lost, nothing learned twice
    positions = final["worker"]["positions"]
    assert {k: v for k, v in positions.items() if k.startswith(case.topics.labeled)} == (
        end_offsets(case)
    )
    assert len(registered(case)) >= 2  # rank 0 published
    assert_lineage_is_whole(case, final)  # the lineage covers both ranks' partitions
