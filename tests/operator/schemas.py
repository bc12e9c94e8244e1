"""Validation against the official Kubernetes schemas shipped by `kubernetes-validate`.

Built-in kinds are validated whole, `--strict` (unknown fields refused). The
schemas do not cover CRD kinds (KEDA, Prometheus Operator, Karpenter); of those,
the parts that are Kubernetes types (ObjectMeta, label selectors, taints, node
selector requirements, object references) are validated against those types.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
from referencing.jsonschema import DRAFT202012

OLDEST = "1.29"
NEWEST = ".".join(kubernetes_validate.latest_version().split(".")[:2])
VERSIONS = (OLDEST, NEWEST)
SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"


def validate(manifest: dict[str, Any], version: str) -> None:
    """Raises `kubernetes_validate.ValidationError` (strict) for a built-in kind."""
    kubernetes_validate.validate(manifest, version, strict=True)


def has_schema(manifest: dict[str, Any], version: str) -> bool:
    try:
        validate(manifest, version)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        return True
    return True


@cache
def _registry(version: str) -> tuple[Path, referencing.Registry[Any]]:
    folder = next(p for p in sorted(SCHEMAS.iterdir()) if p.name == f"v{version}.0-local-strict")
    definitions = json.loads((folder / "_definitions.json").read_text())
    resource = DRAFT202012.create_resource(definitions)
    return folder, resource @ referencing.Registry()


def validate_type(value: Any, type_file: str, version: str) -> None:
    """Validates a fragment against one Kubernetes type, e.g. 'objectmeta-meta-v1'."""
    folder, registry = _registry(version)
    schema = json.loads((folder / f"{type_file}.json").read_text())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(value)
