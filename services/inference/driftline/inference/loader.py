"""Model versions from the MLflow registry, verified before they may load.

The registered model is `spec.model.registry.name`. A version's ONNX graph is its run's
artifact `model/model.onnx`, and its tag `driftline.sha256` is the file's sha256,
recorded when the version was registered: a file that does not match it (a broken
download, a replaced artifact) is refused, so serving never runs bytes that the
trainer did not publish. See `driftline.api.registry` for the whole contract.

`import mlflow` takes seconds; it happens here, on the loader thread, the first
time a version is fetched, never at import time of the service.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftline.api.registry import MODEL_ARTIFACT, TAG_SHA256
from driftline.inference.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelArtifact:
    """A verified ONNX file of one registered version."""

    version: str
    sha256: str
    path: Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Registry:
    """Resolves aliases and fetches verified versions of one registered model."""

    def __init__(self, tracking_uri: str, model_name: str, model_dir: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.model_dir = Path(model_dir or tempfile.mkdtemp(prefix="driftline-models-"))
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self._client: Any = None

    def _mlflow(self) -> Any:
        if self._client is None:
            # A registry that is down should fail a load attempt in seconds, not after
            # MLflow's default minutes of retries; the loader retries on its own schedule.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def version_for_alias(self, alias: str) -> str | None:
        """The version an alias points at; None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        try:
            return str(client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}:
                return None
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                return None
            raise ModelLoadError(f"cannot read alias {alias!r}: {exc}") from exc
        except Exception as exc:  # requests' connection errors and the like
            raise ModelLoadError(f"cannot reach the model registry: {exc}") from exc

    def fetch(self, version: str) -> ModelArtifact:
        """Download version `version` and check its sha256 against the registered tag."""
        client = self._mlflow()
        try:
            record = client.get_model_version(self.model_name, version)
        except Exception as exc:
            raise ModelLoadError(f"cannot read version {version}: {exc}") from exc
        expected = (record.tags or {}).get(TAG_SHA256)
        if not expected:
            raise ModelLoadError(
                f"version {version} has no {TAG_SHA256} tag; a version must be registered "
                "with its artifact's sha256"
            )
        target = self.model_dir / f"{version}-{expected[:16]}"
        path = target / Path(MODEL_ARTIFACT).name
        if not path.exists():
            path = self._download(record, target)
        actual = file_sha256(path)
        if actual != expected:
            shutil.rmtree(target, ignore_errors=True)
            raise ModelLoadError(
                f"version {version}: the artifact's sha256 is {actual[:16]}..., the registry "
                f"says {expected[:16]}...; refusing to load it"
            )
        return ModelArtifact(version=version, sha256=actual, path=path)

    def _download(self, record: Any, target: Path) -> Path:
        client = self._mlflow()
        staging = Path(tempfile.mkdtemp(dir=self.model_dir, prefix=".download-"))
        try:
            if record.run_id:
                local = client.download_artifacts(record.run_id, MODEL_ARTIFACT, str(staging))
            else:
                import mlflow.artifacts

                source = str(record.source).rstrip("/")
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source}/{Path(MODEL_ARTIFACT).name}",
                    dst_path=str(staging),
                    tracking_uri=self.tracking_uri,
                )
            target.mkdir(parents=True, exist_ok=True)
            path = target / Path(MODEL_ARTIFACT).name
            os.replace(local, path)
            return path
        except Exception as exc:
            raise ModelLoadError(
                f"cannot download {MODEL_ARTIFACT} of version {record.version}: {exc}"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
