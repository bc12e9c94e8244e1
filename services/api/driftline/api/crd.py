"""Generate the `DynamicModel` CustomResourceDefinition from the pydantic models.

pydantic writes JSON Schema (2020-12); the Kubernetes API server wants a *structural*
OpenAPI v3 schema: no `$ref`, no `anyOf` for optional fields, `exclusiveMinimum` as a
boolean beside `minimum`, every node typed. This module does that translation, adds
defaults (also for fields built by a default factory, so `kubectl get -o yaml` shows
the effective spec), keeps the CEL rules written next to the models, and adds the
printer columns and the status subresource.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from driftline.api.spec import GROUP, KIND, PLURAL, VERSION, DynamicModelSpec
from driftline.api.status import DynamicModelStatus

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion"},
    {"name": "Candidate", "type": "string", "jsonPath": ".status.candidateVersion"},
    {"name": "Canary%", "type": "integer", "jsonPath": ".status.rollout.weight"},
    {"name": "Drift", "type": "boolean", "jsonPath": ".status.drift.detected"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# JSON Schema keywords that the structural schema keeps as they are.
_KEEP = {
    "type",
    "description",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "format",
    "default",
    "required",
}


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also write defaults that come from a default factory (lists; `{}` for objects)."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if hasattr(value, "model_dump"):
                value = {}  # the API server then applies the nested defaults
            schema = {**schema, "default": value}
            schema.pop("default_factory")
        return super().default_schema(schema)


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Translate one pydantic JSON Schema node into a structural OpenAPI v3 node."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)

    if "anyOf" in node:
        # Optional[X] is written as anyOf [X, null]: in Kubernetes the field is simply
        # left out, so keep X. Other unions are not part of the contract.
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional are not structural: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", "absent") is None:
            rest.pop("default")
        return _structural({**options[0], **rest}, defs)

    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEEP}
    if "const" in node:
        out["enum"] = [node["const"]]
        out.setdefault("type", "string")
    if "exclusiveMinimum" in node:
        out["minimum"] = node["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node:
        out["maximum"] = node["exclusiveMaximum"]
        out["exclusiveMaximum"] = True
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value

    kind = node.get("type")
    if kind == "object" or "properties" in node:
        out["type"] = "object"
        if "properties" in node:
            out["properties"] = {
                name: _structural(child, defs) for name, child in node["properties"].items()
            }
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:  # dict[str, X]: a typed map
            out["additionalProperties"] = _structural(extra, defs)
        elif extra is not False and "properties" not in node:  # dict[str, Any]
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    elif "type" not in out and "enum" not in out:
        raise ValueError(f"schema node without a type is not structural: {node}")
    return out


def openapi_schema(model: type[Any], mode: str = "validation") -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults, mode=mode)
    return _structural(raw, raw.get("$defs", {}))


def _strip_defaults(node: dict[str, Any]) -> dict[str, Any]:
    """Status is written by the operator; defaulting it on the server would only confuse."""
    out = {k: v for k, v in node.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {k: _strip_defaults(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _strip_defaults(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strip_defaults(out["additionalProperties"])
    return out


def dynamic_model_crd() -> dict[str, Any]:
    """The full CustomResourceDefinition manifest."""
    spec_schema = openapi_schema(DynamicModelSpec)
    status_schema = _strip_defaults(openapi_schema(DynamicModelStatus, mode="serialization"))
    status_schema.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "driftline"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["dm", "dms"],
                "categories": ["driftline", "ml"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model that keeps learning after it ships.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }
