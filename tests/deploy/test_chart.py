"""The chart: lints strictly, carries the generated CRD, and installs the operator
exactly as the generated manifests in manifests/operator do."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.api.crd import dynamic_model_crd
from driftline.operator.builders.install import operator_manifests
from driftline.operator.settings import OperatorSettings

from .chart import CHART, NAMESPACE, ROOT, VALUE_SETS, Tools, by_key, render, run, values_file
from .schema import settings_schema

# The first test to ask for the tools may install them (minutes, once).
pytestmark = pytest.mark.timeout(1800)

HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(tools: Tools, tmp_path: Path, name: str) -> None:
    values = values_file(VALUE_SETS[name], tmp_path, name)
    run([tools["helm"], "lint", "--strict", str(CHART), "-f", str(values)])


def test_values_outside_the_schema_are_refused(tools: Tools, tmp_path: Path) -> None:
    for wrong, field in [
        ({"operator": {"logLevel": "LOUD"}}, "logLevel"),
        ({"operator": {"settings": {"tick_second": 5}}}, "tick_second"),
        ({"operator": {"settings": {"trainer_checkpoints": "tape"}}}, "trainer_checkpoints"),
        ({"dev": {"enabled": "yes"}}, "enabled"),
    ]:
        with pytest.raises(AssertionError, match=field):
            render(tools, wrong, tmp_path, "wrong")


def test_the_chart_crd_is_the_generated_one(rendered: dict[str, list[dict[str, Any]]]) -> None:
    crds = [d for d in rendered["defaults"] if d["kind"] == "CustomResourceDefinition"]
    assert crds == [dynamic_model_crd()]
    committed = yaml.safe_load((CHART / "crds" / "dynamicmodels.driftline.io.yaml").read_text())
    assert committed == dynamic_model_crd()


def _comparable(doc: dict[str, Any], helm: bool) -> dict[str, Any]:
    """A copy without Helm's own labels (which the chart must add) and with sorted rules."""
    doc = json.loads(json.dumps(doc))
    if helm:
        assert set(doc["metadata"]["labels"]) >= HELM_LABELS, doc["metadata"]
    for meta in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata", {})):
        for key in HELM_LABELS:
            meta.get("labels", {}).pop(key, None)
    if "rules" in doc:  # the same rules in any order are the same permissions
        doc["rules"] = sorted(doc["rules"], key=lambda r: json.dumps(r, sort_keys=True))
    return doc


@pytest.mark.parametrize(
    ("value_set", "watch"), [("defaults", []), ("watch-namespaces", ["ml", "fraud"])]
)
def test_the_chart_installs_what_the_operator_generates(
    rendered: dict[str, list[dict[str, Any]]], value_set: str, watch: list[str]
) -> None:
    assert VALUE_SETS[value_set].get("operator", {}).get("watchNamespaces", []) == watch
    generated = [
        d
        for d in operator_manifests(OperatorSettings.model_construct(), NAMESPACE, watch)
        if d["kind"] != "Namespace"  # `helm install --create-namespace`, or the user's own
    ]
    chart = {
        k: _comparable(d, helm=True)
        for k, d in by_key(rendered[value_set]).items()
        # The chart's addition: the CRD (generated, tested above).
        if d["kind"] != "CustomResourceDefinition"
    }
    expected = {k: _comparable(d, helm=False) for k, d in by_key(generated).items()}
    assert sorted(chart) == sorted(expected)
    for key, doc in expected.items():
        assert chart[key] == doc, key


def test_the_manifests_kustomization_applies_every_generated_file(tools: Tools) -> None:
    built = [
        d
        for d in yaml.safe_load_all(
            run([tools["kubectl"], "kustomize", str(ROOT / "manifests")]).stdout
        )
        if d
    ]
    files = [ROOT / "manifests" / "crd" / "dynamicmodels.driftline.io.yaml"] + [
        ROOT / "manifests" / "operator" / f
        for f in ("namespace.yaml", "rbac.yaml", "deployment.yaml")
    ]
    generated = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    assert by_key(built) == by_key(generated)


def test_operator_settings_from_values_reach_the_operator(
    tools: Tools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every setting the schema allows, set in values, is read back by OperatorSettings."""
    settings = {
        "operator_metrics_port": 9200,
        "field_manager": "dl",
        "part_log_level": "DEBUG",
        "inference_port": 8081,
        "metrics_port": 9101,
        "joiner_resources": {"cpu": "2", "memory": "1Gi"},
        "trainer_resources": {"cpu": "4", "memory": "8Gi", "tmp": "8Gi"},
        "drift_resources": {"cpu": "1", "memory": "2Gi", "tmp": "2Gi"},
        "inference_tmp": "2Gi",
        "trainer_checkpoints": "ephemeral",
        "trainer_checkpoint_size": "20Gi",
        "trainer_storage_class": "",
        "artifact_store_ports": [443, 9000],
        "gpu_metric": "gpu",
        "inflight_metric": "inflight",
        "rps_metric": "rps",
        "lag_threshold": 1000000,
        "worker_cpu_utilization": 60,
        "karpenter_node_class": {
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "name": "gpu",
        },
        "registry_timeout_seconds": 2.5,
        "registry_retries": 3,
        "tick_seconds": 5,
        "capabilities_ttl_seconds": 0,
        "retry_seconds": 12.5,
        "full_apply_seconds": 300.0,
        "handler_threads": 24,
        "inference_spool_mib": 256,
        "inference_shutdown_delay_seconds": 7.5,
    }
    assert set(settings) == set(settings_schema()["properties"]), "add the new setting here"
    values = {
        "image": {"tag": "1.2.3", "pullPolicy": "Always"},
        "operator": {"logLevel": "DEBUG", "watchNamespaces": ["ml"], "settings": settings},
    }
    docs = render(tools, values, tmp_path)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for var in container["env"]:
        monkeypatch.setenv(var["name"], var["value"])
    parsed = OperatorSettings()
    for name, value in settings.items():
        got = getattr(parsed, name)
        assert (got.model_dump(exclude_unset=True) if isinstance(value, dict) else got) == value, (
            name
        )
    assert (parsed.image_tag, parsed.image_pull_policy, parsed.log_level) == (
        "1.2.3",
        "Always",
        "DEBUG",
    )
    assert parsed.namespaces == ["ml"]
    assert container["image"] == "driftline/operator:1.2.3"
    assert {"name": "metrics", "containerPort": 9200, "protocol": "TCP"} in container["ports"]


def test_values_schema_passes_every_operator_setting() -> None:
    schema_path = CHART / "values.schema.json"
    schema = json.loads(schema_path.read_text())
    committed = schema["properties"]["operator"]["properties"]["settings"]
    if os.environ.get("DRIFTLINE_UPDATE_GOLDEN") and committed != settings_schema():
        schema["properties"]["operator"]["properties"]["settings"] = settings_schema()
        schema_path.write_text(json.dumps(schema, indent=2) + "\n")
        committed = settings_schema()
    assert committed == settings_schema(), (
        "values.schema.json is behind OperatorSettings: DRIFTLINE_UPDATE_GOLDEN=1 rewrites it"
    )


def test_one_version_everywhere() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == project == OperatorSettings.model_fields["image_tag"].default
