"""The learner's whole state as plain arrays: checkpoints and the state artifact.

One format for two uses: the checkpoint on the trainer's volume (written before
offsets are committed) and the `training/state.npz` artifact logged with each
version (a trainer with no checkpoint starts from the champion's). Weights,
optimizer moments, replay reservoir, anchor set, recent rows, Fisher and EWC
anchor are numpy arrays; everything else is JSON in the `__meta__` entry.

No pickle: `np.load(..., allow_pickle=False)` reads it, and a checkpoint written
for another feature contract or another network is refused with a clear error.

Files are written atomically: to a temporary file in the same directory,
fsync'd, renamed over the old one, and the directory fsync'd. A crash leaves
either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from driftline.trainer.learner import EpochRecord, OnlineLearner

META = "__meta__"
FORMAT = 1


class StateError(RuntimeError):
    """A state that cannot be restored into this learner; the message says why."""


def learner_state(learner: OnlineLearner) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    arrays: dict[str, NDArray[Any]] = {
        f"net.{name}": value.detach().cpu().numpy()
        for name, value in learner.net.state_dict().items()
    }
    optimizer = learner.optimizer.state_dict()
    for index, slots in optimizer["state"].items():
        for name, value in slots.items():
            arrays[f"opt.{index}.{name}"] = (
                value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.array(value)
            )
    arrays.update(learner.replay.state("replay"))
    arrays.update(learner.anchors.state("anchors"))
    arrays.update(learner.holdout.state("holdout"))
    arrays.update(learner.recent.state("recent"))
    arrays.update(learner.ewc.state())
    arrays.update(learner.monitor.state())
    meta = {
        "format": FORMAT,
        "task": learner.task,
        "contract": learner.layout.contract_hash(),
        "learner": learner.model.learner.model_dump(mode="json"),
        "epoch": learner.epoch,
        "seq": learner.seq,
        "trained": learner.trained,
        "boost_left": learner.boost_left,
        "epochs": [asdict(e) for e in learner.epochs],
        "optimizer_groups": optimizer["param_groups"],
        "rng": learner.rng.bit_generator.state,
    }
    return arrays, meta


def restore_learner(
    learner: OnlineLearner, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]
) -> None:
    if meta.get("format") != FORMAT:
        raise StateError(f"state format {meta.get('format')!r} is not {FORMAT}")
    if meta["contract"] != learner.layout.contract_hash():
        raise StateError(
            "the state was written for another feature contract; a changed contract needs a "
            "new bootstrap (python -m driftline.trainer bootstrap --force)"
        )
    weights = {
        k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("net.")
    }
    if learner.net.regression and "target_mean" not in weights:
        # Written before regression targets were standardised: that network learned
        # the raw units, which is scale 1 around 0.
        weights |= {
            "target_mean": torch.zeros(()),
            "target_scale": torch.ones(()),
            "target_fitted": torch.ones((), dtype=torch.bool),
        }
    try:
        learner.net.load_state_dict(weights)
    except RuntimeError as exc:
        raise StateError(
            f"the state's network does not match spec.model.learner ({exc}); a changed learner "
            "needs a new bootstrap"
        ) from exc
    slots: dict[int, dict[str, Any]] = {}
    for key, value in arrays.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = torch.from_numpy(np.array(value))
    if slots:
        learner.optimizer.load_state_dict(
            {"state": slots, "param_groups": meta["optimizer_groups"]}
        )
    learner.replay.load_state("replay", arrays)
    learner.anchors.load_state("anchors", arrays)
    learner.holdout.load_state("holdout", arrays)
    learner.recent.load_state("recent", arrays)
    learner.ewc.load_state(arrays)
    learner.monitor.load_state(arrays)
    learner.epoch = int(meta["epoch"])
    learner.seq = int(meta["seq"])
    learner.trained = int(meta["trained"])
    learner.fresh = learner.trained == 0
    learner.boost_left = int(meta["boost_left"])
    learner.epochs = [EpochRecord(**e) for e in meta["epochs"]]
    learner.rng.bit_generator.state = meta["rng"]


def to_bytes(arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    encoded = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buffer, **arrays, **{META: encoded})
    return buffer.getvalue()


def from_bytes(data: bytes) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    try:
        meta = json.loads(arrays.pop(META).tobytes())
    except KeyError:
        raise StateError("not a Driftline trainer state: no __meta__ entry") from None
    return arrays, meta


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
