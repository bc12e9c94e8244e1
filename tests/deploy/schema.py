"""The part of the chart's values.schema.json that comes from the operator's settings.

`operator.settings` in values.yaml passes any operator setting through as
`DRIFTLINE_OPERATOR_<NAME>`; its schema is `OperatorSettings`' own JSON schema, less
the settings the chart sets from its own values. A test compares the committed
schema with this one (`DRIFTLINE_UPDATE_GOLDEN=1` rewrites it).
"""

from __future__ import annotations

from typing import Any

from driftline.operator.settings import OperatorSettings

# Set by the chart from its own values (image.*, operator.logLevel,
# operator.watchNamespaces), or meaningless in a cluster (kubeconfig).
CHART_MANAGED = frozenset(
    {
        "kubeconfig",
        "namespaces",
        "log_level",
        "operator_image",
        "image",
        "gpu_image",
        "inference_image",
        "image_tag",
        "image_pull_policy",
    }
)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace `$ref`s by their definitions; drop titles (noise in a values schema)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **extra}, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def settings_schema() -> dict[str, Any]:
    full = OperatorSettings.model_json_schema()
    defs = full.get("$defs", {})
    properties = {
        name: _inline(prop, defs)
        for name, prop in full["properties"].items()
        if name not in CHART_MANAGED
    }
    for prop in properties.values():
        # Defaults live in the operator; the chart passes only what is set.
        prop.pop("default", None)
        if prop.get("type") == "object":
            for sub in prop.get("properties", {}).values():
                sub.pop("default", None)
    return {
        "type": "object",
        "description": "Further operator settings by name (docs/operator.md); "
        "each becomes DRIFTLINE_OPERATOR_<NAME>.",
        "additionalProperties": False,
        "properties": properties,
    }
