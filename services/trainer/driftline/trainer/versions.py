"""Model versions in MLflow: registering them once, and reading the serving one.

Each version is an MLflow run holding the artifacts (`model/model.onnx`,
`reference/reference.npz`, `training/state.npz`, optionally
`model/model.int8.onnx`), and a registered model version whose source is that
run's artifact root, carrying the lineage tags of `driftline.api.artifacts`.

Registration is idempotent: every version carries a publish key (derived from
the Kafka offsets that trained it), and `register` first looks for a version
with that key. A trainer that crashed after registering but before recording it
finds its version again instead of registering a duplicate.

MLflow failures are raised as `RegistryUnavailableError`; the worker keeps learning
and tries again later.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from driftline.api import artifacts

log = logging.getLogger(__name__)

TAG_PUBLISH_KEY: Final = "driftline.publish_key"
TAG_INT8_SHA256: Final = "driftline.int8_sha256"
STATE_ARTIFACT: Final = "training/state.npz"
INT8_ARTIFACT: Final = "model/model.int8.onnx"


class RegistryUnavailableError(RuntimeError):
    """MLflow could not be reached or refused a call; the message says which."""


class ArtifactMismatchError(RuntimeError):
    """A downloaded model does not match its `driftline.sha256` tag."""


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str | None
    tags: dict[str, str]


@dataclass(frozen=True)
class Artifacts:
    model: bytes
    reference: bytes
    state: bytes
    int8: bytes | None = None

    def files(self) -> dict[str, bytes]:
        out = {
            artifacts.MODEL_ARTIFACT: self.model,
            artifacts.REFERENCE_ARTIFACT: self.reference,
            STATE_ARTIFACT: self.state,
        }
        if self.int8 is not None:
            out[INT8_ARTIFACT] = self.int8
        return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelVersions:
    """The registered model `name` on the MLflow server at `tracking_uri`."""

    def __init__(self, tracking_uri: str, name: str) -> None:
        from mlflow import MlflowClient

        self.name = name
        self.tracking_uri = tracking_uri
        self.experiment = f"driftline-{name}"
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise RegistryUnavailableError(f"MLflow {what} failed: {exc.message}") from exc
        except OSError as exc:  # connection refused, timeouts (requests' errors are OSErrors)
            raise RegistryUnavailableError(f"MLflow {what} failed: {exc}") from exc

    # -- reading --------------------------------------------------------------------

    def by_alias(self, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise RegistryUnavailableError(f"MLflow alias lookup failed: {exc.message}") from exc
        except OSError as exc:
            raise RegistryUnavailableError(f"MLflow alias lookup failed: {exc}") from exc
        return VersionInfo(str(mv.version), mv.run_id, dict(mv.tags))

    def by_key(self, key: str) -> VersionInfo | None:
        found = self._call(
            "search",
            self._client.search_model_versions,
            f"name='{self.name}' and tags.`{TAG_PUBLISH_KEY}`='{key}'",
        )
        if not found:
            return None
        mv = min(found, key=lambda v: int(v.version))
        return VersionInfo(str(mv.version), mv.run_id, dict(mv.tags))

    def download(self, info: VersionInfo, path: str) -> bytes:
        """One artifact of a version; the ONNX model is checked against its sha256 tag."""
        if info.run_id is None:
            raise RegistryUnavailableError(f"version {info.version} has no run to download from")
        with tempfile.TemporaryDirectory(prefix="driftline-dl-") as tmp:
            local = self._call("download", self._client.download_artifacts, info.run_id, path, tmp)
            data = Path(local).read_bytes()
        if path == artifacts.MODEL_ARTIFACT:
            want = info.tags.get(artifacts.TAG_SHA256)
            if want != sha256(data):
                raise ArtifactMismatchError(
                    f"{self.name} version {info.version}: {path} has sha256 {sha256(data)}, "
                    f"the tag says {want}"
                )
        return data

    # -- writing --------------------------------------------------------------------

    def register(
        self,
        key: str,
        artifacts: Artifacts,
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
            version = self._create(key, artifacts, tags, metrics or {})
        for alias in aliases:
            self._call(
                "set alias", self._client.set_registered_model_alias, self.name, alias, version
            )
        return version

    def _create(
        self, key: str, artifacts: Artifacts, tags: dict[str, str], metrics: dict[str, float]
    ) -> str:
        import time

        from mlflow.entities import Metric

        experiment = self._call(
            "experiment lookup", self._client.get_experiment_by_name, self.experiment
        )
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._call("create experiment", self._client.create_experiment, self.experiment)
        )
        all_tags = {**tags, TAG_PUBLISH_KEY: key, artifacts.TAG_SHA256: sha256(artifacts.model)}
        if artifacts.int8 is not None:
            all_tags[TAG_INT8_SHA256] = sha256(artifacts.int8)
        run = self._call(
            "create run",
            self._client.create_run,
            experiment_id,
            tags=all_tags,
            run_name=f"{self.name}-{key[:12]}",
        )
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory(prefix="driftline-up-") as tmp:
            for path, data in artifacts.files().items():
                local = Path(tmp) / path
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                self._call(
                    "artifact upload",
                    self._client.log_artifact,
                    run_id,
                    str(local),
                    str(Path(path).parent),
                )
        now = int(time.time() * 1000)
        if metrics:
            batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
            self._call("log metrics", self._client.log_batch, run_id, metrics=batch)
        self._call("end run", self._client.set_terminated, run_id)
        self._ensure_registered_model()
        mv = self._call(
            "create model version",
            self._client.create_model_version,
            self.name,
            run.info.artifact_uri,
            run_id,
            tags=all_tags,
        )
        log.info("registered %s version %s (publish key %s)", self.name, mv.version, key)
        return str(mv.version)

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise RegistryUnavailableError(f"MLflow lookup failed: {exc.message}") from exc
            try:
                self._client.create_registered_model(self.name)
            except MlflowException as again:  # created meanwhile by someone else
                if again.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise RegistryUnavailableError(
                        f"MLflow create model failed: {again.message}"
                    ) from again
        except OSError as exc:
            raise RegistryUnavailableError(f"MLflow lookup failed: {exc}") from exc

    def record_rejection(self, tags: dict[str, str], metrics: dict[str, float]) -> None:
        """A run for a gate decision that did not publish (best effort, for the audit trail)."""
        import time

        from mlflow.entities import Metric

        experiment = self._call(
            "experiment lookup", self._client.get_experiment_by_name, self.experiment
        )
        if experiment is None:
            return
        run = self._call(
            "create run",
            self._client.create_run,
            experiment.experiment_id,
            tags={**tags, "driftline.published": "false"},
            run_name=f"{self.name}-rejected",
        )
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        if batch:
            self._call("log metrics", self._client.log_batch, run.info.run_id, metrics=batch)
        self._call("end run", self._client.set_terminated, run.info.run_id)
