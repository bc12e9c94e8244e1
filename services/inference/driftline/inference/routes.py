"""What a route does, whichever face reached it: the HTTP app (`app`) and the gRPC
service (`grpc_face`) call the same methods, so a request served over either has the
same checks, routing, batching, cache, prediction log, stats and errors.

A face only turns its wire format into an `OipRequest` (or a name and version) and
the answer, or the `InferenceError`, back into its own.
"""

from __future__ import annotations

from collections.abc import Awaitable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from driftline.inference.contract import Served
from driftline.inference.errors import ModelNotFoundError, ModelNotReadyError
from driftline.inference.oip import OipRequest
from driftline.inference.service import InferenceService

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]


def package_version() -> str:
    try:
        return version("driftline")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


class Routes:
    """The protocol-independent part of every route, and the requests in flight."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.inflight = 0
        """Inference requests being served, over any face (a gauge reads it)."""

    def check_name(self, name: str) -> None:
        if name != self.service.name:
            raise ModelNotFoundError(
                f"no model {name!r} here; this server serves {self.service.name!r}", field="name"
            )

    def check_model(self, name: str, version: str | None = None) -> None:
        """404 unless `name` is served here and `version` (when given) is loaded."""
        self.check_name(name)
        state = self.service.pool.state
        if version is not None and (state is None or version not in state.models()):
            raise ModelNotFoundError(f"version {version} is not loaded", field="version")

    def check_ready(self) -> None:
        """503 unless the server is ready (a model loaded, not draining)."""
        if not self.service.ready:
            raise ModelNotReadyError(self.service.why_not_ready())

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "driftline", "version": package_version(), "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self.check_model(name, version)
        state = self.service.pool.state
        models = state.models() if state else {}
        versions = [version] if version else sorted(models)
        precisions = {v: models[v].precision for v in versions if v in models}
        return self.service.oip.metadata(versions, PLATFORM, precisions)

    def infer(
        self,
        request: OipRequest,
        *,
        route: str,
        version: str | None,
        started: float,
    ) -> Awaitable[Served]:
        """Serve a decoded Open Inference Protocol request (the model name checked).

        Not a coroutine of its own: it hands back the service's, one frame less for
        every request to enter and resume."""
        return self.service.predict(
            request.rows,
            request.entity_ids,
            request.request_ids,
            route=route,
            version=version,
            started=started,
            sticky_keys=request.sticky_keys,
            fields=request.fields,
        )
