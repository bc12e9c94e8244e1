"""Domain errors of the inference service, each carrying its HTTP status.

One handler (in `app`) turns any of them into a JSON response
`{"error": message, "field": field}`; the Open Inference Protocol asks for an
`error` member, and `field` tells a client exactly which part of its request is
wrong. Bad input is always a 4xx; only a failure of the service itself is a 5xx.
"""

from __future__ import annotations

from typing import Any


class InferenceError(Exception):
    """Base: an HTTP status, a message, optionally the offending field and headers."""

    status = 500

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class InvalidInputError(InferenceError):
    """The request does not match the feature contract or the protocol (422)."""

    status = 422


class BadRequestError(InferenceError):
    """The body is not JSON, or not the shape of any request we know (400)."""

    status = 400


class PayloadTooLargeError(InferenceError):
    """The body is larger than `max_body_bytes` (413); it is not read, let alone parsed."""

    status = 413


class ModelNotFoundError(InferenceError):
    """No such model here, or that version is not loaded (404)."""

    status = 404


class OverloadedError(InferenceError):
    """The batch queue is full: shed at once instead of queueing without bound (429)."""

    status = 429

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after_seconds)})


class ModelNotReadyError(InferenceError):
    """No model is loaded yet, or the process is shutting down (503)."""

    status = 503

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after_seconds)})


class FeatureSourceUnavailableError(InferenceError):
    """A feature's source (Redis) cannot be read and its policy refuses the request (503)."""

    status = 503

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field, headers={"retry-after": "1"})


class ModelFailedError(InferenceError):
    """ONNX Runtime raised while running a batch: the service's fault, not the client's."""

    status = 500


class ModelLoadError(RuntimeError):
    """A version could not be fetched, verified or loaded; the serving one stays."""
