"""The OpenAPI document of the inference server, as exact as the routes themselves.

The hot routes read their bodies with msgspec, not with FastAPI's models, so FastAPI
alone would publish them without a request body and with its own 422 schema, which
is not what they answer. This module completes the document from the same msgspec
types the decoders use: the request bodies, the one model name this server serves,
and the error responses every route really gives (`{"error": ..., "field": ...}`).
Clients and API tooling (Swagger UI, schemathesis) then see the API as it is.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import numpy as np
from fastapi import FastAPI

from driftline.inference.contract import FeatureContract
from driftline.inference.oip import InferRequest
from driftline.inference.plain import MAX_ID_LENGTH

# The largest number that a float32 cast keeps finite (halfway to the next power of two
# rounds to infinity): the decoder accepts exactly the numbers up to it.
FLOAT32_MAX = float(np.nextafter(2.0**128 - 2.0**103, 0))

ERROR_SCHEMA = "Error"
JSON = "application/json"

# What each kind of route may answer besides 200, and why.
_COMMON = {
    "400": "The body is not JSON, or not the shape of any request of this route.",
    "404": "No model of this name here, or that version is not loaded.",
    "413": "The body is larger than the server's limit; it was not read.",
    "422": "The request does not match the feature contract; `field` names what is wrong.",
    "429": "The batch queue is full; retry after `Retry-After` seconds.",
    "503": "No model version is loaded yet, or the server is shutting down.",
}
_INFER_ONLY = {"500": "The model failed to run this batch (the server's fault, not the client's)."}
_OUTCOMES = {
    "400": "The body is not JSON.",
    "404": "No model of this name here.",
    "413": "The body is larger than the server's limit; it was not read.",
    "422": "An outcome is not valid for this model; `field` names it (`[row].field` in a list).",
    "503": "Kafka did not acknowledge every outcome: `failed` lists the request ids to send "
    "again after `Retry-After` seconds (a repeat is ignored).",
}
_METADATA = {
    "404": "No model of this name here, or that version is not loaded.",
    "503": "No model version is loaded yet, or the server is shutting down.",
}


def _error() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What is wrong, and what to do."},
            "field": {"type": "string", "description": "The part of the request at fault."},
            "accepted": {"type": "integer", "description": "Outcomes: how many were kept."},
            "failed": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Outcomes: the request ids not kept, to send again.",
            },
        },
    }


def _responses(statuses: dict[str, str]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    return {
        code: {"description": why, "content": {JSON: {"schema": ref}}}
        for code, why in statuses.items()
    }


def _plain_request(contract: FeatureContract, max_rows: int) -> Any:
    """The plain route's body with the limits the decoder enforces after parsing."""
    number = Annotated[float, msgspec.Meta(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
    fields: list[tuple[str, Any]] = [
        (name, number) for name in contract.numeric if name not in contract.sourced
    ]
    fields += [(name, str | int) for name in contract.categorical]
    row = msgspec.defstruct("Features", fields, kw_only=True)
    rows = Annotated[list[row], msgspec.Meta(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
    key = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
    request_id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    entity = key | int | list[key | int] | None
    body: list[tuple[str, Any, Any]] = [
        ("features", row | rows, msgspec.NODEFAULT),
        ("entity_id", entity, None),
        ("request_id", request_id | list[request_id] | None, None),
    ]
    rename = {f"r{i}": name for i, name in enumerate(contract.request_fields)}
    body += [(field, entity, None) for field in rename]
    return msgspec.defstruct("PredictRequest", body, kw_only=True, rename=rename)


def _outcomes_request(contract: FeatureContract, max_rows: int) -> Any:
    """One outcome or a list: a class index (`label`) or an observed value (`target`)."""
    request_id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    value: Any
    if contract.task == "classification":
        value = ("label", Annotated[int, msgspec.Meta(ge=0, le=contract.classes - 1)])
    else:
        value = ("target", float)
    row = msgspec.defstruct(
        "Outcome", [("request_id", request_id), value], kw_only=True, forbid_unknown_fields=True
    )
    rows = Annotated[list[row], msgspec.Meta(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
    return row | rows


def _accepted() -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "integer", "description": "Outcomes kept."}},
    }
    return {
        "description": "Kafka acknowledged every outcome.",
        "content": {JSON: {"schema": schema}},
    }


def document(
    api: FastAPI, model_name: str, contract: FeatureContract, max_rows: int
) -> dict[str, Any]:
    """FastAPI's document of `api`, completed as the module docstring says."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=api.title, version=api.version, routes=api.routes)
    (plain, infer, outcomes), components = msgspec.json.schema_components(
        [_plain_request(contract, max_rows), InferRequest, _outcomes_request(contract, max_rows)],
        ref_template="#/components/schemas/{name}",
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)
    schemas[ERROR_SCHEMA] = _error()
    # FastAPI's own validation schemas describe answers these routes never give.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    bodies = {"/predict": plain, "/infer": infer, "/outcomes": outcomes}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "name" and parameter["in"] == "path":
                    parameter["schema"] = {"type": "string", "enum": [model_name]}
            responses = operation["responses"]
            responses.pop("422", None)
            if method == "post":
                body = next(b for suffix, b in bodies.items() if path.endswith(suffix))
                operation["requestBody"] = {
                    "required": True,
                    "content": {JSON: {"schema": body}},
                }
                if path.endswith("/outcomes"):
                    responses.pop("200", None)
                    responses["202"] = _accepted()
                    responses.update(_responses(_OUTCOMES))
                else:
                    responses.update(_responses({**_COMMON, **_INFER_ONLY}))
            elif "{name}" in path:
                responses.update(_responses(_METADATA))
            elif path in ("/readyz", "/v2/health/ready"):
                responses.update(_responses({"503": _METADATA["503"]}))
            elif path == "/metrics":
                responses["200"] = {
                    "description": "Prometheus metrics (text exposition format).",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
    return doc


def install(api: FastAPI, model_name: str, contract: FeatureContract, max_rows: int) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not built:
            built.update(document(api, model_name, contract, max_rows))
        return built

    api.openapi = openapi  # type: ignore[method-assign]
