"""Model versions in MLflow: registering them once, and reading the serving one.

Each version is an MLflow run holding the artifacts (`model/model.onnx`,
`reference/reference.npz`, `training/state.npz`, optionally
`model/model.int8.onnx`), and a registered model version whose source is that
run's artifact root, carrying the lineage tags of `driftline.api.artifacts`. With a
signing key (`spec.model.signing.signingKeySecretRef`) the ONNX model is signed and its
signature logged beside it (`model/model.onnx.sig`), for every version published; an
int8 graph is signed the same way (`model/model.int8.onnx.sig`).

Registration is idempotent: every version carries a publish key (derived from
the Kafka offsets that trained it), and `register` first looks for a version
with that key. A trainer that crashed after registering but before recording it
finds its version again instead of registering a duplicate.

MLflow is reached through `driftline.common.registry`; its failures are raised as
`RegistryError`, and the worker keeps learning and tries again later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from driftline.api import artifacts
from driftline.common.model_signature import sign_bytes
from driftline.common.registry import ModelVersion, RegisteredModel, sha256

log = logging.getLogger(__name__)

TAG_PUBLISH_KEY: Final = "driftline.publish_key"
STATE_ARTIFACT: Final = "training/state.npz"


@dataclass(frozen=True)
class Artifacts:
    model: bytes
    reference: bytes | None  # None: an imported version without a sample
    state: bytes | None  # None: an imported version without labelled rows
    int8: bytes | None = None

    def files(self) -> dict[str, bytes]:
        out = {artifacts.MODEL_ARTIFACT: self.model}
        if self.reference is not None:
            out[artifacts.REFERENCE_ARTIFACT] = self.reference
        if self.state is not None:
            out[STATE_ARTIFACT] = self.state
        if self.int8 is not None:
            out[artifacts.INT8_ARTIFACT] = self.int8
        return out


def has_state(info: ModelVersion) -> bool:
    """Whether the version holds `training/state.npz` (an imported one may not)."""
    return info.tags.get(artifacts.TAG_TRAINING_STATE) != "none"


class ModelVersions:
    """The registered model `name` on the MLflow server at `tracking_uri`."""

    def __init__(self, tracking_uri: str, name: str, signing_key: Path | None = None) -> None:
        self.name = name
        self.signing_key = signing_key
        self.tracking_uri = tracking_uri
        self.experiment = f"driftline-{name}"
        self.model = RegisteredModel(tracking_uri, name)

    # -- reading --------------------------------------------------------------------

    def by_alias(self, alias: str) -> ModelVersion | None:
        return self.model.version_for_alias(alias)

    def by_key(self, key: str) -> ModelVersion | None:
        found = self.model.find_versions({TAG_PUBLISH_KEY: key})
        return found[0] if found else None

    def download(self, info: ModelVersion, path: str) -> bytes:
        """One artifact of a version; the ONNX model is checked against its sha256 tag."""
        return self.model.read_artifact(info, path)

    # -- writing --------------------------------------------------------------------

    def register(
        self,
        key: str,
        files: Artifacts,
        tags: dict[str, str],
        aliases: list[str],
        metrics: dict[str, float] | None = None,
    ) -> str:
        """Register the version for `key` unless it exists; point `aliases` at it."""
        existing = self.by_key(key)
        if existing is not None:
            log.info("version %s already holds publish key %s", existing.version, key)
            version = existing.version
        else:
            version = self._create(key, files, tags, metrics or {})
        for alias in aliases:
            self.model.set_alias(alias, version)
        return version

    def _create(
        self, key: str, files: Artifacts, tags: dict[str, str], metrics: dict[str, float]
    ) -> str:
        experiment_id = self.model.experiment_id(self.experiment)
        assert experiment_id is not None
        all_tags = {**tags, TAG_PUBLISH_KEY: key, artifacts.TAG_SHA256: sha256(files.model)}
        if files.int8 is not None:
            all_tags[artifacts.TAG_INT8_SHA256] = sha256(files.int8)
        run = self.model.log_run(
            experiment_id,
            f"{self.name}-{key[:12]}",
            tags=all_tags,
            files=self._signed(files.files()),
            metrics=metrics,
        )
        mv = self.model.create_version(run.artifact_uri, run.run_id, all_tags)
        log.info("registered %s version %s (publish key %s)", self.name, mv.version, key)
        return mv.version

    def _signed(self, files: dict[str, bytes]) -> dict[str, bytes]:
        """`files` with a signature beside each ONNX graph (fp32, and int8 if any)."""
        if self.signing_key is None:
            return files
        signed = dict(files)
        for graph, signature in (
            (artifacts.MODEL_ARTIFACT, artifacts.SIGNATURE_ARTIFACT),
            (artifacts.INT8_ARTIFACT, artifacts.INT8_SIGNATURE_ARTIFACT),
        ):
            if graph in files:
                name = Path(graph).name
                signed[signature] = sign_bytes(files[graph], name, self.signing_key)
        return signed

    def record_rejection(self, tags: dict[str, str], metrics: dict[str, float]) -> None:
        """A run for a gate decision that did not publish (best effort, for the audit trail)."""
        experiment_id = self.model.experiment_id(self.experiment, create=False)
        if experiment_id is None:
            return
        self.model.log_run(
            experiment_id,
            f"{self.name}-rejected",
            tags={**tags, "driftline.published": "false"},
            metrics=metrics,
        )
