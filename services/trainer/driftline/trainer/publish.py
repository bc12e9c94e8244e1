"""From learned weights to a registered candidate: gate, export, stage, register.

A publish goes through four steps, and the worker checkpoints between the
second and the third:

1. `gate`: score the new weights and the serving (champion) version, the latter
   with ONNX Runtime on its own registered graph, on the epoch's held-out slice
   and anchor set (`gate.py`).
2. `build` + `stage`: export ONNX, check ONNX Runtime against torch, with
   `spec.inference.quantization` quantise and keep the int8 graph only within its
   tolerance (`int8_gate.py`), take the reference sample and the training state, and write all of
   it to a staging directory on the trainer's volume (renamed into place, so it
   is whole or absent). The publish key names it: a hash of the offsets that
   trained this version.
3. The worker writes its checkpoint (which names the staged key) and commits
   the Kafka offsets.
4. `complete`: register the staged version in MLflow (idempotent by key), move
   the `candidate` alias, delete the staging directory (renamed away first, so it
   too is whole or absent).

A crash anywhere leaves either no staged version (the examples are read again
and learned again), or a staged one named by the checkpoint, which the restarted
trainer completes; MLflow's key lookup makes sure it is registered once. A
checkpoint naming a key whose directory is gone was stopped after registering:
the registry already holds that version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftline.api import artifacts
from driftline.api.resource import DynamicModel
from driftline.common.registry import ModelVersion
from driftline.trainer import export, int8_gate
from driftline.trainer.adapter import TAG_ADAPTER_BASE, AdapterLearner
from driftline.trainer.buffers import EMPTY
from driftline.trainer.checkpoint import learner_state, to_bytes, write_atomic
from driftline.trainer.gate import GateDecision, Scores, decide, quality
from driftline.trainer.int8_gate import Int8Decision
from driftline.trainer.learner import OnlineLearner
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import Artifacts, ModelVersions

log = logging.getLogger(__name__)

Offsets = dict[str, list[int]]  # "topic:partition" -> [first, last]


def publish_key(model: str, offsets: Offsets, epoch: int) -> str:
    """The identity of a version: which records trained it (and in which epoch)."""
    body = json.dumps({"model": model, "offsets": offsets, "epoch": epoch}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Staged:
    key: str
    artifacts: Artifacts
    tags: dict[str, str]
    aliases: list[str]
    metrics: dict[str, float]


class Publisher:
    def __init__(
        self, settings: TrainerSettings, model: DynamicModel, versions: ModelVersions
    ) -> None:
        self.settings = settings
        self.model = model
        self.versions = versions
        self.staging = settings.checkpoint_dir / "staged"
        self._serving: tuple[str, Any] | None = None  # (version, ONNX Runtime session)

    # -- 1. the gate ----------------------------------------------------------------

    def serving(self) -> tuple[ModelVersion | None, Any]:
        """The champion and an ONNX Runtime session of its graph (cached per version)."""
        info = self.versions.by_alias(artifacts.ALIAS_CHAMPION)
        if info is None:
            return None, None
        if self._serving is None or self._serving[0] != info.version:
            graph = self.versions.download(info, artifacts.MODEL_ARTIFACT)
            self._serving = (info.version, export.session(graph))
        return info, self._serving[1]

    def gate(self, learner: OnlineLearner) -> GateDecision | None:
        """The decision, or None while the epoch has too few held-out rows to judge."""
        holdout, anchors = learner.gate_rows()
        if len(holdout) < self.settings.gate_min_holdout:
            return None
        info, sess = self.serving()
        task = learner.task

        def serving_score(rows: Any) -> float:
            if sess is None or len(rows) == 0:
                return float("nan")
            return quality(task, rows.labels, export.run_onnx(sess, rows, learner.layout, task))

        return decide(
            new=Scores(learner.score(holdout), learner.score(anchors)),
            serving=Scores(serving_score(holdout), serving_score(anchors)),
            holdout_rows=len(holdout),
            anchor_rows=len(anchors),
            min_anchor_rows=self.settings.gate_min_anchor,
            max_regression=self.model.spec.training.gate.max_regression,
            epoch=learner.epoch,
            serving_version=info.version if info else None,
        )

    # -- 2. build and stage ---------------------------------------------------------

    def build(
        self,
        learner: OnlineLearner,
        gate: str,
        gate_metrics: dict[str, float],
        offsets: Offsets,
        parent: str | None,
        aliases: list[str],
        key: str | None = None,
    ) -> Staged:
        """Export and check; raises `export.ExportError` when the export must not ship.

        `gate` is the decision as JSON (the `driftline.gate` tag); `key` defaults to
        the publish key of `offsets`.
        """
        spec = self.model.spec
        layout, task = learner.layout, learner.task
        adapter = isinstance(learner, AdapterLearner)
        if isinstance(learner, AdapterLearner):
            graph = learner.export(spec.model.classes)
        else:
            graph = export.export_onnx(learner.net, layout, task, spec.model.classes)
        sample = self._sample(learner)
        torch_out = learner.predict(sample.numeric, sample.codes)
        diff = export.parity(graph, torch_out, sample, layout, task)
        if diff > self.settings.parity_tolerance:
            raise export.ExportError(
                f"ONNX Runtime differs from torch by {diff:.2e} > {self.settings.parity_tolerance}"
            )
        int8, int8_decision = self._quantized(graph, learner)
        learner.refresh_ewc()  # the published weights become the EWC anchor
        arrays, meta = learner_state(learner)
        metrics = {"parity_max_abs_diff": diff, **gate_metrics}
        if int8_decision is not None:
            metrics |= int8_decision.metrics()
        tags = {
            artifacts.TAG_PARENT_VERSION: parent or "",
            artifacts.TAG_OFFSETS: json.dumps(offsets, sort_keys=True),
            artifacts.TAG_EXAMPLES_SEEN: str(learner.seq),
            artifacts.TAG_CONCEPT_EPOCH: str(learner.epoch),
            artifacts.TAG_GATE: gate,
            artifacts.TAG_SPEC_HASH: layout.contract_hash(),
            "driftline.learner": "adapter" if adapter else spec.model.learner.type,
            "driftline.parity_max_abs_diff": f"{diff:.3e}",
        }
        if isinstance(learner, AdapterLearner):
            tags[TAG_ADAPTER_BASE] = learner.base.version
        if int8_decision is not None:
            tags[artifacts.TAG_INT8] = int8_decision.tag()
        return Staged(
            key=key or publish_key(self.model.name, offsets, learner.epoch),
            artifacts=Artifacts(
                model=graph,
                reference=export.reference_npz(sample, layout, torch_out, task),
                state=to_bytes(arrays, meta),
                int8=int8,
            ),
            tags=tags,
            aliases=aliases,
            metrics=metrics,
        )

    def _sample(self, learner: OnlineLearner) -> Any:
        """Recent rows of the epoch: for the parity check and the reference sample."""
        slots = learner.recent.latest(learner.epoch, self.settings.reference_rows)
        if len(slots) < 10:  # an epoch just opened: the newest rows of any epoch
            filled = np.flatnonzero(learner.recent.epoch != EMPTY)
            newest = filled[np.argsort(learner.recent.seq[filled], kind="stable")]
            slots = newest[-self.settings.reference_rows :]
        if len(slots) == 0:
            raise export.ExportError("no recent rows to check the export on")
        return learner.recent.rows(slots)

    def _quantized(
        self, graph: bytes, learner: OnlineLearner
    ) -> tuple[bytes | None, Int8Decision | None]:
        """The int8 graph when the spec asks for one and it passes the int8 gate."""
        wanted = self.model.spec.inference.quantization
        if wanted is None and not self.settings.quantize:
            return None, None
        max_drop = wanted.max_accuracy_drop if wanted else self.settings.quantize_tolerance
        holdout, anchors = learner.gate_rows()
        if len(holdout) == 0 and len(anchors) == 0:
            return None, int8_gate.decide({}, {}, {}, max_drop)
        int8 = export.quantize_int8(graph)
        decision = int8_gate.check_int8(
            graph,
            int8,
            {"holdout": holdout, "anchor": anchors},
            learner.layout,
            learner.task,
            max_drop,
        )
        log.info("int8 graph %s: %s", decision.outcome, decision.reason)
        return (int8 if decision.keep else None), decision

    def stage(self, staged: Staged) -> None:
        target = self.staging / staged.key
        if target.exists():
            return
        tmp = self.staging / f".{staged.key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path, data in staged.artifacts.files().items():
            write_atomic(tmp / Path(path).name, data)
        meta = {"tags": staged.tags, "aliases": staged.aliases, "metrics": staged.metrics}
        write_atomic(tmp / "meta.json", json.dumps(meta).encode())
        os.rename(tmp, target)
        _fsync_dir(self.staging)

    # -- 4. register ----------------------------------------------------------------

    def complete(self, key: str) -> str:
        """Register the staged version `key` (once) and remove it from staging."""
        folder = self.staging / key
        if not folder.exists():
            # Registered, then stopped while the directory was being removed.
            done = self.versions.by_key(key)
            if done is None:
                raise RuntimeError(
                    f"the checkpoint names staged version {key}, which is neither staged "
                    "nor registered"
                )
            return str(done.version)
        meta = json.loads((folder / "meta.json").read_bytes())
        int8 = folder / Path(artifacts.INT8_ARTIFACT).name
        files = Artifacts(
            model=(folder / "model.onnx").read_bytes(),
            reference=(folder / "reference.npz").read_bytes(),
            state=(folder / "state.npz").read_bytes(),
            int8=int8.read_bytes() if int8.exists() else None,
        )
        version = self.versions.register(key, files, meta["tags"], meta["aliases"], meta["metrics"])
        # Renamed away before it is removed: a stop halfway through the removal leaves no
        # half directory under the key's name for the next start to read.
        removed = self.staging / f".{key}.done"
        shutil.rmtree(removed, ignore_errors=True)
        os.rename(folder, removed)
        _fsync_dir(self.staging)
        shutil.rmtree(removed, ignore_errors=True)
        return version

    def staged_keys(self) -> list[str]:
        if not self.staging.exists():
            return []
        return sorted(p.name for p in self.staging.iterdir() if not p.name.startswith("."))

    def discard_except(self, keep: str | None) -> None:
        """Remove staged versions the checkpoint does not name (a crash before it), and
        what a stop left half removed."""
        for key in self.staged_keys():
            if key != keep:
                shutil.rmtree(self.staging / key, ignore_errors=True)
        if self.staging.exists():
            for left in self.staging.glob(".*.done"):
                shutil.rmtree(left, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
