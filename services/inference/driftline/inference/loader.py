"""Model versions from the MLflow registry, verified before they may load.

The registered model is `spec.model.registry.name`. A version's ONNX graph is its run's
artifact `model/model.onnx`, and its tag `driftline.sha256` is the file's sha256,
recorded when the version was registered: a file that does not match it (a broken
download, a replaced artifact) is refused, so serving never runs bytes that the
trainer did not publish. See `driftline.api.artifacts` for the whole contract.

`import mlflow` takes about 5 s, more than everything else the service imports,
and a pod is not ready before its first model is loaded. So the registry is read
over MLflow's REST API where the tracking server allows it (`RegisteredModel` with
`rest_reads`, in `driftline.common.registry`), and the MLflow client is imported
only for what REST does not cover.

With `spec.model.signing` naming a key, the artifact must also match its signature
(`model/model.onnx.sig`, OpenSSF model signing) at every load: a version whose
signature is bad, or missing while `required`, is refused like a sha256 mismatch, and
the versions already loaded keep serving.

With `spec.inference.quantization`, a version registered with an int8 graph
(`model/model.int8.onnx`, tag `driftline.int8_sha256`) may be fetched at int8: the
same sha256 check against its own tag, and with signing the same signature check
against `model/model.int8.onnx.sig`. Which precision serves is the pool's choice.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from driftline.api.artifacts import (
    INT8_ARTIFACT,
    INT8_SIGNATURE_ARTIFACT,
    MODEL_ARTIFACT,
    SIGNATURE_ARTIFACT,
    TAG_INT8_SHA256,
)
from driftline.common.model_signature import SignatureCheck, SignatureError
from driftline.common.registry import (
    ArtifactMismatchError,
    ModelVersion,
    RegisteredModel,
    RegistryError,
    check_sha256,
    expected_sha256,
    file_sha256,
)
from driftline.inference import metrics
from driftline.inference.errors import ModelLoadError

log = logging.getLogger(__name__)

Precision = Literal["fp32", "int8"]

GRAPHS: Final[dict[Precision, tuple[str, str]]] = {
    "fp32": (MODEL_ARTIFACT, SIGNATURE_ARTIFACT),
    "int8": (INT8_ARTIFACT, INT8_SIGNATURE_ARTIFACT),
}
"""Each precision's graph and signature (`driftline.api.artifacts`)."""


@dataclass(frozen=True)
class ModelArtifact:
    """A verified ONNX file of one registered version, at one precision."""

    version: str
    sha256: str
    path: Path
    precision: Precision = "fp32"


class Registry:
    """Resolves aliases and fetches verified versions of one registered model."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        model_dir: str | None = None,
        timeout_seconds: float = 20.0,
        signature_check: SignatureCheck | None = None,
    ) -> None:
        # A registry that is down should fail a load attempt in seconds, not after
        # MLflow's default minutes of retries; the loader retries on its own schedule.
        self.model = RegisteredModel(
            tracking_uri,
            model_name,
            rest_reads=True,
            timeout_seconds=timeout_seconds,
            retries=2,
            backoff_factor=1,
        )
        self.model_name = model_name
        self.model_dir = Path(model_dir or tempfile.mkdtemp(prefix="driftline-models-"))
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.rest = self.model.rest
        self.signature_check = signature_check

    def version_for_alias(self, alias: str) -> str | None:
        """The version an alias points at; None when the alias (or the model) does not exist."""
        try:
            found = self.model.version_for_alias(alias)
        except RegistryError as exc:
            raise ModelLoadError(str(exc)) from exc
        return None if found is None else found.version

    def has_int8(self, version: str) -> bool:
        """Whether the version was registered with an int8 graph (`TAG_INT8_SHA256`)."""
        try:
            return TAG_INT8_SHA256 in self.model.get_version(version).tags
        except RegistryError as exc:
            raise ModelLoadError(str(exc)) from exc

    def fetch(self, version: str, precision: Precision = "fp32") -> ModelArtifact:
        """Download the version's graph at `precision` and check its sha256 against the
        registered tag (and its signature, with `spec.model.signing`)."""
        artifact, signature = GRAPHS[precision]
        name = PurePosixPath(artifact).name
        try:
            record = self.model.get_version(version)
            expected = expected_sha256(record, artifact)
            target = self.model_dir / f"{version}-{expected[:16]}"
            path = target / name
            if not path.exists():
                self._download(record, target, artifact)
            actual = file_sha256(path)
            try:
                check_sha256(record, actual, artifact)
            except ArtifactMismatchError:
                shutil.rmtree(target, ignore_errors=True)
                raise
        except (RegistryError, ArtifactMismatchError) as exc:
            raise ModelLoadError(str(exc)) from exc
        if self.signature_check is not None:
            self._check_signature(record, path, signature)
        return ModelArtifact(version=version, sha256=actual, path=path, precision=precision)

    def _check_signature(self, record: ModelVersion, path: Path, artifact: str) -> None:
        """Verify the graph against its signature `artifact`, downloaded afresh."""
        assert self.signature_check is not None
        staging = Path(tempfile.mkdtemp(dir=self.model_dir, prefix=".signature-"))
        try:
            try:
                signature: Path | None = self.model.download(record, artifact, staging)
            except RegistryError as exc:
                log.debug("version %s: no %s (%s)", record.version, artifact, exc)
                signature = None
            if not self.signature_check.verify(path, signature):
                log.warning(
                    "version %s has no %s; loaded because signatures are not required",
                    record.version,
                    artifact,
                )
        except SignatureError as exc:
            metrics.model_signature_refusals_total.inc()
            message = f"version {record.version} refused: {exc}"
            log.error("%s", message)
            raise ModelLoadError(message) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _download(self, record: ModelVersion, target: Path, artifact: str) -> None:
        staging = Path(tempfile.mkdtemp(dir=self.model_dir, prefix=".download-"))
        try:
            local = self.model.download(record, artifact, staging)
            target.mkdir(parents=True, exist_ok=True)
            os.replace(local, target / PurePosixPath(artifact).name)
        except RegistryError:
            raise
        except Exception as exc:  # the file system's errors
            raise ModelLoadError(
                f"cannot download {artifact} of version {record.version}: {exc}"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
