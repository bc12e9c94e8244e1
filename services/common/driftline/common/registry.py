"""The MLflow model registry, reached one way by every Driftline part.

- `configure_mlflow`: MLflow's environment defaults (no telemetry, no progress bars,
  request timeout and retries), set in one place for each process.
- `RegisteredModel`: one registered model (`spec.model.registry.name`): its aliases
  (`champion`, `candidate`, `baseline`), its versions (register, read, find by tag),
  the runs that hold their files, and those files, downloaded by artifact name
  (`driftline.api.artifacts`), each ONNX graph (fp32, int8) checked against its sha256 tag.

`import mlflow` takes about 5 s, more than everything else inference imports, and a
pod is not ready before its first model is loaded. So mlflow is imported on first use
only, and a `RegisteredModel` made with `rest_reads=True` answers its reads from an
HTTP tracking server (the usual case) over MLflow's REST API directly: the alias, the
version record, and the file through the server's artifact proxy (`mlflow-artifacts:`
URIs). Other tracking URIs (`sqlite:`, `file:`), artifact stores the server does not
proxy (`s3://`, `gs://`, ...) and every write go through the MLflow client. Either way
MLflow's own credentials apply (`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME`
and `MLFLOW_TRACKING_PASSWORD`).

Failures are raised as `RegistryError` (unreachable, refused), a file that does not
match its sha256 tag as `ArtifactMismatchError`; each part turns them into its own
errors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import quote, urlparse

from driftline.api.artifacts import INT8_ARTIFACT, MODEL_ARTIFACT, TAG_INT8_SHA256, TAG_SHA256

NOT_FOUND: Final = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
"""MLflow's error codes for a model or version that does not exist."""

# A missing alias of an existing model is an invalid parameter to MLflow.
ALIAS_NOT_FOUND: Final = NOT_FOUND | {"INVALID_PARAMETER_VALUE"}

QUIET: Final[Mapping[str, str]] = {
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # else a line on stdout per run
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # not for log files
}
"""MLflow's environment defaults for every Driftline process."""

DEFAULT_TIMEOUT_SECONDS: Final = 20.0


def mlflow_environment(
    timeout_seconds: float | None = None,
    retries: int | None = None,
    backoff_factor: int | None = None,
) -> dict[str, str]:
    """MLflow's environment for a Driftline process (also for one it starts).

    MLflow's client retries a request for minutes by default; every part has a retry
    loop of its own, so it passes shorter limits here."""
    env = dict(QUIET)
    if timeout_seconds is not None:
        env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout_seconds))
    if retries is not None:
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    if backoff_factor is not None:
        env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(backoff_factor)
    return env


def configure_mlflow(
    timeout_seconds: float | None = None,
    retries: int | None = None,
    backoff_factor: int | None = None,
) -> None:
    """Sets MLflow's environment defaults in this process; values already set win.

    The MLflow client reads them on each call, so the first caller of a process (its
    entry point, or the first client made) decides."""
    for key, value in mlflow_environment(timeout_seconds, retries, backoff_factor).items():
        os.environ.setdefault(key, value)


class RegistryError(RuntimeError):
    """The registry could not be reached or refused a call; the message says which."""


class ArtifactMismatchError(RuntimeError):
    """A downloaded model does not match its `driftline.sha256` tag (or has none)."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its run (which holds its files), source and tags."""

    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]


@dataclass(frozen=True)
class Run:
    run_id: str
    artifact_uri: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SHA256_TAGS: Final[Mapping[str, str]] = {
    MODEL_ARTIFACT: TAG_SHA256,
    INT8_ARTIFACT: TAG_INT8_SHA256,
}
"""The tag that holds each ONNX graph's sha256."""


def expected_sha256(version: ModelVersion, artifact: str = MODEL_ARTIFACT) -> str:
    """The graph's sha256 as registered; a version without one may not be served."""
    tag = SHA256_TAGS[artifact]
    expected = version.tags.get(tag)
    if not expected:
        raise ArtifactMismatchError(
            f"version {version.version} has no {tag} tag; a version must be "
            "registered with its artifact's sha256"
        )
    return expected


def check_sha256(version: ModelVersion, actual: str, artifact: str = MODEL_ARTIFACT) -> None:
    """Raises `ArtifactMismatchError` unless `actual` is the graph's registered sha256."""
    expected = expected_sha256(version, artifact)
    if actual != expected:
        raise ArtifactMismatchError(
            f"version {version.version}: the sha256 of {PurePosixPath(artifact).name} is "
            f"{actual[:16]}..., the registry says {expected[:16]}...; refusing to load it"
        )


def _code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", "") or exc)


def _missing(exc: Exception, codes: frozenset[str] = NOT_FOUND) -> bool:
    return _code(exc) in codes or "not found" in str(exc).lower()


def _version(found: Any) -> ModelVersion:
    return ModelVersion(
        version=str(found.version),
        run_id=found.run_id or None,
        source=str(found.source or ""),
        tags=dict(found.tags or {}),
    )


class RegisteredModel:
    """The registered model `name` on the MLflow tracking server `tracking_uri`.

    `timeout_seconds`, `retries` and `backoff_factor` go to `configure_mlflow` when the
    MLflow client is first made; `timeout_seconds` also limits each REST read."""

    def __init__(
        self,
        tracking_uri: str,
        name: str,
        *,
        rest_reads: bool = False,
        timeout_seconds: float | None = None,
        retries: int | None = None,
        backoff_factor: int | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.name = name
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_factor = backoff_factor
        self.base_url = tracking_uri.rstrip("/")
        self.rest = rest_reads and urlparse(self.base_url).scheme in ("http", "https")
        self._client: Any = None

    def client(self) -> Any:
        """The MLflow client (mlflow is imported on the first call)."""
        if self._client is None:
            configure_mlflow(self.timeout_seconds, self.retries, self.backoff_factor)
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.client(), method)(*args, **kwargs)
        except Exception as exc:  # MLflow's errors, and connection errors (requests')
            raise RegistryError(f"MLflow {what} failed for {self.name!r}: {_message(exc)}") from exc

    # --- aliases ---------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """Every alias and the version it names; none before the model is registered."""
        try:
            model = self.client().get_registered_model(self.name)
        except Exception as exc:
            if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise RegistryError(f"reading aliases of {self.name!r}: {_message(exc)}") from exc
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def version_for_alias(self, alias: str) -> ModelVersion | None:
        """The version `alias` names; None when the alias (or the model) does not exist."""
        if self.rest:
            body = self._get(
                "/api/2.0/mlflow/registered-models/alias",
                {"name": self.name, "alias": alias},
                missing_ok=True,
            )
            return None if body is None else self._rest_version(body["model_version"])
        try:
            found = self.client().get_model_version_by_alias(self.name, alias)
        except Exception as exc:
            if _missing(exc, ALIAS_NOT_FOUND):
                return None
            raise RegistryError(f"cannot read alias {alias!r} of {self.name!r}: {exc}") from exc
        return _version(found)

    def set_alias(self, alias: str, version: str) -> None:
        self._call(f"set alias {alias!r}", "set_registered_model_alias", self.name, alias, version)

    def delete_alias(self, alias: str, if_version: str | None = None) -> None:
        """Removes `alias`; with `if_version`, only while it still names that version."""
        if if_version is None or self.aliases().get(alias) == if_version:
            self._call(f"delete alias {alias!r}", "delete_registered_model_alias", self.name, alias)

    # --- versions --------------------------------------------------------------------------

    def get_version(self, version: str) -> ModelVersion:
        if self.rest:
            body = self._get(
                "/api/2.0/mlflow/model-versions/get", {"name": self.name, "version": version}
            )
            assert body is not None
            return self._rest_version(body["model_version"])
        try:
            return _version(self.client().get_model_version(self.name, version))
        except Exception as exc:
            raise RegistryError(
                f"cannot read version {version} of {self.name!r}: {_message(exc)}"
            ) from exc

    def find_versions(self, tags: Mapping[str, str]) -> list[ModelVersion]:
        """The versions carrying every tag of `tags`, oldest first."""
        query = " and ".join(
            [f"name='{self.name}'", *(f"tags.`{key}`='{value}'" for key, value in tags.items())]
        )
        found = self._call("search", "search_model_versions", query)
        return sorted((_version(mv) for mv in found), key=lambda v: int(v.version))

    def create_version(self, source: str, run_id: str, tags: Mapping[str, str]) -> ModelVersion:
        """A new version of the files at `source` (registering the model if need be)."""
        self._ensure_registered()
        found = self._call(
            "create model version",
            "create_model_version",
            self.name,
            source,
            run_id,
            tags=dict(tags),
        )
        return _version(found)

    def set_version_tag(self, version: str, key: str, value: str) -> None:
        self._call(
            f"set tag {key!r} of version {version}",
            "set_model_version_tag",
            self.name,
            version,
            key,
            value,
        )

    def add_artifact(self, version: ModelVersion, artifact: str, data: bytes) -> None:
        """Adds `data` as `artifact` (e.g. `REFERENCE_ARTIFACT`) to the run of `version`."""
        if version.run_id is None:
            raise RegistryError(f"version {version.version} of {self.name!r} has no run")
        with tempfile.TemporaryDirectory(prefix="driftline-artifact-") as tmp:
            local = Path(tmp) / PurePosixPath(artifact).name
            local.write_bytes(data)
            parent = str(PurePosixPath(artifact).parent)
            self._call("artifact upload", "log_artifact", version.run_id, str(local), parent)

    def _ensure_registered(self) -> None:
        try:
            self.client().get_registered_model(self.name)
        except Exception as exc:
            if _code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(
                    f"MLflow lookup of {self.name!r} failed: {_message(exc)}"
                ) from exc
            try:
                self.client().create_registered_model(self.name)
            except Exception as again:  # created meanwhile by someone else
                if _code(again) != "RESOURCE_ALREADY_EXISTS":
                    raise RegistryError(
                        f"MLflow create model {self.name!r} failed: {_message(again)}"
                    ) from again

    # --- runs: where a version's files live ------------------------------------------------

    def experiment_id(self, experiment: str, create: bool = True) -> str | None:
        """The id of experiment `experiment`; made if missing and `create`, else None."""
        found = self._call("experiment lookup", "get_experiment_by_name", experiment)
        if found is not None:
            return str(found.experiment_id)
        if not create:
            return None
        return str(self._call("create experiment", "create_experiment", experiment))

    def run_experiment(self, run_id: str) -> str:
        return str(self._call("run lookup", "get_run", run_id).info.experiment_id)

    def log_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        files: Mapping[str, bytes] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> Run:
        """A finished run holding `files` (artifact name -> bytes), `tags` and `metrics`."""
        kwargs: dict[str, Any] = {"run_name": run_name}
        if tags:
            kwargs["tags"] = dict(tags)
        run = self._call("create run", "create_run", experiment_id, **kwargs)
        run_id = str(run.info.run_id)
        with tempfile.TemporaryDirectory(prefix="driftline-up-") as tmp:
            for artifact, data in (files or {}).items():
                local = Path(tmp) / artifact
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                parent = str(PurePosixPath(artifact).parent)
                self._call("artifact upload", "log_artifact", run_id, str(local), parent)
        if metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
            self._call("log metrics", "log_batch", run_id, metrics=batch)
        self._call("end run", "set_terminated", run_id)
        return Run(run_id=run_id, artifact_uri=str(run.info.artifact_uri))

    # --- artifacts -------------------------------------------------------------------------

    def download(self, version: ModelVersion, artifact: str, directory: Path) -> Path:
        """Artifact `artifact` of `version` (e.g. `MODEL_ARTIFACT`) as a file in `directory`.

        The trainer logs a version's files into its run; a version registered from an
        artifact location keeps them beside its source (`.../model`)."""
        if self.rest:
            proxied = self._proxied_url(version, artifact)
            if proxied is not None:
                local = directory / PurePosixPath(artifact).name
                self._stream(proxied, local)
                return local
        failures = []
        if version.run_id:
            try:
                where = self._call(
                    f"download of {artifact}",
                    "download_artifacts",
                    version.run_id,
                    artifact,
                    str(directory),
                )
                return Path(where)
            except RegistryError as exc:
                failures.append(f"run {version.run_id}: {exc}")
        if version.source and not version.source.startswith("models:/"):
            uri = f"{version.source.rstrip('/').rsplit('/', 1)[0]}/{artifact}"
            try:
                import mlflow.artifacts

                where = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(directory), tracking_uri=self.tracking_uri
                )
                return Path(where)
            except Exception as exc:
                failures.append(f"{uri}: {exc}")
        raise RegistryError(
            f"cannot download {artifact} of {self.name!r} version {version.version}: "
            + ("; ".join(failures) or "the version has neither a run nor a source")
        )

    def read_artifact(self, version: ModelVersion, artifact: str, verify: bool = True) -> bytes:
        """The bytes of one artifact; an ONNX graph (fp32 or int8) is checked against its
        sha256 tag unless `verify` is false."""
        with tempfile.TemporaryDirectory(prefix="driftline-dl-") as tmp:
            data = self.download(version, artifact, Path(tmp)).read_bytes()
        if verify and artifact in SHA256_TAGS:
            check_sha256(version, sha256(data), artifact)
        return data

    # --- REST, for reads without importing mlflow ------------------------------------------

    def _headers(self) -> dict[str, str]:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _auth(self) -> tuple[str, str] | None:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        return (user, password) if user and password else None

    @property
    def _timeout(self) -> float:
        return self.timeout_seconds or DEFAULT_TIMEOUT_SECONDS

    def _get(
        self, path: str, params: dict[str, str], missing_ok: bool = False
    ) -> dict[str, Any] | None:
        import httpx

        try:
            response = httpx.get(
                self.base_url + path,
                params=params,
                headers=self._headers(),
                auth=self._auth(),
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach the model registry: {exc}") from exc
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200:
            return body
        message = str(body.get("message", response.text[:200]))
        if missing_ok and (body.get("error_code") in NOT_FOUND or "not found" in message.lower()):
            return None
        raise RegistryError(f"the model registry answered {response.status_code}: {message}")

    @staticmethod
    def _rest_version(found: dict[str, Any]) -> ModelVersion:
        return ModelVersion(
            version=str(found["version"]),
            run_id=found.get("run_id") or None,
            source=str(found.get("source", "")),
            tags={t["key"]: t["value"] for t in found.get("tags", [])},
        )

    def _proxied_url(self, version: ModelVersion, artifact: str) -> str | None:
        """The file's URL on the tracking server's artifact proxy, if it proxies this run."""
        if not version.run_id:
            return None
        body = self._get("/api/2.0/mlflow/runs/get", {"run_id": version.run_id})
        assert body is not None
        artifact_uri = urlparse(str(body["run"]["info"]["artifact_uri"]))
        if artifact_uri.scheme != "mlflow-artifacts":
            return None
        base = self.base_url
        if artifact_uri.netloc:
            base = f"{urlparse(self.base_url).scheme}://{artifact_uri.netloc}"
        path = f"{artifact_uri.path.strip('/')}/{artifact}"
        return f"{base}/api/2.0/mlflow-artifacts/artifacts/{quote(path)}"

    def _stream(self, url: str, destination: Path) -> None:
        import httpx

        try:
            with httpx.stream(
                "GET", url, headers=self._headers(), auth=self._auth(), timeout=self._timeout
            ) as response:
                if response.status_code != 200:
                    raise RegistryError(
                        f"the artifact proxy answered {response.status_code} for {url}"
                    )
                with destination.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot download {url}: {exc}") from exc
