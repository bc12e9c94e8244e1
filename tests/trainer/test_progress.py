"""Stream positions and lineage ranges survive a checkpoint; control records are told apart."""

from __future__ import annotations

import json

import numpy as np

from driftline.api.events import DriftEvent, RolloutEvent, encode
from driftline.trainer.progress import Progress
from driftline.trainer.signals import read_control


def test_positions_and_lineage() -> None:
    p = Progress()
    p.advance("t", 0, 9)
    p.advance("t", 0, 4)  # an older record never moves the position back
    p.learned("t", np.array([0, 1, 0, 1]), np.array([5, 2, 9, 3]))
    p.learned("t", np.array([1]), np.array([7]))
    assert p.positions == {"t:0": 10}
    assert p.lineage == {"t:0": [5, 9], "t:1": [2, 7]}
    p.gate_history.append({"publish": False, "reason": "x"})
    again = Progress.from_meta(json.loads(json.dumps(p.to_meta())))
    assert again == p
    assert again.commit_offsets({("t", 0), ("u", 3)}) == [("t", 0, 10)]


def test_control_records() -> None:
    drift = DriftEvent(
        event_id="e1",
        model="m",
        model_version="1",
        kind="concept",
        detector="ks",
        detected_at=1.0,
        score=0.5,
    )
    assert read_control(encode(drift)).event == drift
    rollout = RolloutEvent(
        model="m",
        stage="canary",
        previous_stage="shadow",
        stable_version="1",
        candidate_version="2",
        weight=5,
        reason="ok",
        at=1.0,
    )
    assert read_control(encode(rollout)) == read_control(encode(rollout))
    assert (
        read_control(encode(rollout)).event is None and read_control(encode(rollout)).error is None
    )
    bad = read_control(b"{oops")
    assert bad.event is None and bad.error is not None and bad.error.startswith("control:")
