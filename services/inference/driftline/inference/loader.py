"""Model versions from the MLflow registry, verified before they may load.

The registered model is `spec.model.registry.name`. A version's ONNX graph is its run's
artifact `model/model.onnx`, and its tag `driftline.sha256` is the file's sha256,
recorded when the version was registered: a file that does not match it (a broken
download, a replaced artifact) is refused, so serving never runs bytes that the
trainer did not publish. See `driftline.api.artifacts` for the whole contract.

`import mlflow` takes about 5 s, more than everything else the service imports,
and a pod is not ready before its first model is loaded. So with an HTTP tracking
server (the usual case) the three calls needed here go to MLflow's REST API
directly: the alias, the version record, and the file through the server's
artifact proxy (`mlflow-artifacts:` URIs). Other tracking URIs (`sqlite:`,
`file:`) and artifact stores the server does not proxy (`s3://`, `gs://`, ...) go
through the MLflow client, imported on first use. Either way MLflow's own
credentials apply (`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
`MLFLOW_TRACKING_PASSWORD`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from driftline.api.artifacts import MODEL_ARTIFACT, TAG_SHA256
from driftline.inference.errors import ModelLoadError

log = logging.getLogger(__name__)

ARTIFACT_FILE = PurePosixPath(MODEL_ARTIFACT).name
NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


@dataclass(frozen=True)
class ModelArtifact:
    """A verified ONNX file of one registered version."""

    version: str
    sha256: str
    path: Path


@dataclass(frozen=True)
class VersionRecord:
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Registry:
    """Resolves aliases and fetches verified versions of one registered model."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        model_dir: str | None = None,
        timeout_seconds: float = 20.0,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.model_name = model_name
        self.model_dir = Path(model_dir or tempfile.mkdtemp(prefix="driftline-models-"))
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout_seconds
        self.rest = urlparse(self.tracking_uri).scheme in ("http", "https")
        self._client: Any = None

    # --- the two questions the service asks ------------------------------------------------

    def version_for_alias(self, alias: str) -> str | None:
        """The version an alias points at; None when the alias (or the model) does not exist."""
        if not self.rest:
            return self._client_alias(alias)
        body = self._get(
            "/api/2.0/mlflow/registered-models/alias",
            {"name": self.model_name, "alias": alias},
            missing_ok=True,
        )
        return None if body is None else str(body["model_version"]["version"])

    def fetch(self, version: str) -> ModelArtifact:
        """Download version `version` and check its sha256 against the registered tag."""
        record = self._record(version)
        expected = record.tags.get(TAG_SHA256)
        if not expected:
            raise ModelLoadError(
                f"version {version} has no {TAG_SHA256} tag; a version must be registered "
                "with its artifact's sha256"
            )
        target = self.model_dir / f"{version}-{expected[:16]}"
        path = target / ARTIFACT_FILE
        if not path.exists():
            self._download(record, target)
        actual = file_sha256(path)
        if actual != expected:
            shutil.rmtree(target, ignore_errors=True)
            raise ModelLoadError(
                f"version {version}: the artifact's sha256 is {actual[:16]}..., the registry "
                f"says {expected[:16]}...; refusing to load it"
            )
        return ModelArtifact(version=version, sha256=actual, path=path)

    # --- REST --------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _auth(self) -> tuple[str, str] | None:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        return (user, password) if user and password else None

    def _get(
        self, path: str, params: dict[str, str], missing_ok: bool = False
    ) -> dict[str, Any] | None:
        try:
            response = httpx.get(
                self.tracking_uri + path,
                params=params,
                headers=self._headers(),
                auth=self._auth(),
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"cannot reach the model registry: {exc}") from exc
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200:
            return body
        message = str(body.get("message", response.text[:200]))
        if missing_ok and (body.get("error_code") in NOT_FOUND or "not found" in message.lower()):
            return None
        raise ModelLoadError(f"the model registry answered {response.status_code}: {message}")

    def _record(self, version: str) -> VersionRecord:
        if not self.rest:
            return self._client_record(version)
        body = self._get(
            "/api/2.0/mlflow/model-versions/get", {"name": self.model_name, "version": version}
        )
        assert body is not None
        found = body["model_version"]
        return VersionRecord(
            version=str(found["version"]),
            run_id=found.get("run_id") or None,
            source=str(found.get("source", "")),
            tags={t["key"]: t["value"] for t in found.get("tags", [])},
        )

    def _download(self, record: VersionRecord, target: Path) -> None:
        staging = Path(tempfile.mkdtemp(dir=self.model_dir, prefix=".download-"))
        try:
            proxied = self._proxied_url(record) if self.rest else None
            if proxied is not None:
                local = staging / ARTIFACT_FILE
                self._stream(proxied, local)
            else:
                local = Path(self._client_download(record, staging))
            target.mkdir(parents=True, exist_ok=True)
            os.replace(local, target / ARTIFACT_FILE)
        except ModelLoadError:
            raise
        except Exception as exc:  # the MLflow client's and the file system's errors alike
            raise ModelLoadError(
                f"cannot download {MODEL_ARTIFACT} of version {record.version}: {exc}"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _proxied_url(self, record: VersionRecord) -> str | None:
        """The file's URL on the tracking server's artifact proxy, if it proxies this run."""
        if not record.run_id:
            return None
        body = self._get("/api/2.0/mlflow/runs/get", {"run_id": record.run_id})
        assert body is not None
        artifact_uri = urlparse(str(body["run"]["info"]["artifact_uri"]))
        if artifact_uri.scheme != "mlflow-artifacts":
            return None
        base = self.tracking_uri
        if artifact_uri.netloc:
            base = f"{urlparse(self.tracking_uri).scheme}://{artifact_uri.netloc}"
        path = f"{artifact_uri.path.strip('/')}/{MODEL_ARTIFACT}"
        return f"{base}/api/2.0/mlflow-artifacts/artifacts/{quote(path)}"

    def _stream(self, url: str, destination: Path) -> None:
        try:
            with httpx.stream(
                "GET", url, headers=self._headers(), auth=self._auth(), timeout=self.timeout
            ) as response:
                if response.status_code != 200:
                    raise ModelLoadError(
                        f"the artifact proxy answered {response.status_code} for {url}"
                    )
                with destination.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"cannot download {url}: {exc}") from exc

    # --- the MLflow client, for what REST does not cover ---------------------------------------

    def _mlflow(self) -> Any:
        if self._client is None:
            # A registry that is down should fail a load attempt in seconds, not after
            # MLflow's default minutes of retries; the loader retries on its own schedule.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(self.timeout)))
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _client_alias(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self._mlflow().get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in NOT_FOUND or "not found" in str(exc).lower():
                return None
            raise ModelLoadError(f"cannot read alias {alias!r}: {exc}") from exc
        except Exception as exc:  # connection errors and the like
            raise ModelLoadError(f"cannot reach the model registry: {exc}") from exc

    def _client_record(self, version: str) -> VersionRecord:
        try:
            found = self._mlflow().get_model_version(self.model_name, version)
        except Exception as exc:
            raise ModelLoadError(f"cannot read version {version}: {exc}") from exc
        return VersionRecord(
            version=str(found.version),
            run_id=found.run_id or None,
            source=str(found.source or ""),
            tags=dict(found.tags or {}),
        )

    def _client_download(self, record: VersionRecord, staging: Path) -> str:
        if record.run_id:
            return str(
                self._mlflow().download_artifacts(record.run_id, MODEL_ARTIFACT, str(staging))
            )
        import mlflow.artifacts

        return str(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{record.source.rstrip('/')}/{ARTIFACT_FILE}",
                dst_path=str(staging),
                tracking_uri=self.tracking_uri,
            )
        )
