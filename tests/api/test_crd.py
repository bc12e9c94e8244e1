"""The generated CRD: structural, committed, and with the promised columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from driftline.api.crd import dynamic_model_crd
from driftline.api.manifests import to_yaml

REPO = Path(__file__).resolve().parents[2]
COMMITTED = [
    REPO / "manifests" / "crd" / "dynamicmodels.driftline.io.yaml",
    REPO / "charts" / "driftline" / "crds" / "dynamicmodels.driftline.io.yaml",
]


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += walk(child, f"{path}.{name}")
    if "items" in node:
        out += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_committed_copies_equal_the_generated_crd() -> None:
    text = to_yaml(dynamic_model_crd())
    for path in COMMITTED:
        assert path.read_text() == text, f"{path} is stale: run `make manifests`"


def test_schema_is_structural() -> None:
    schema = dynamic_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "type" in node, f"{path} has no type"
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "uniqueItems", "const"):
            assert banned not in node, f"{path} uses {banned}"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node


def test_printer_columns_and_status_subresource() -> None:
    version = dynamic_model_crd()["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Phase", "Stable", "Candidate", "Canary%", "Drift", "Age"]
    assert version["subresources"] == {"status": {}}


def test_cross_field_rules_are_in_the_schema() -> None:
    schema = dynamic_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = [r["rule"] for _, n in walk(schema) for r in n.get("x-kubernetes-validations", [])]
    assert any("self.min <= self.max" in r for r in rules)
    assert any("isSorted()" in r for r in rules)
    assert any("entrypoint" in r for r in rules)
    features = schema["properties"]["spec"]["properties"]["features"]
    assert features["x-kubernetes-list-type"] == "map"
