"""The generated DynamicModel CRD installs on a real API server, which then
accepts the samples and refuses invalid models by schema and by CEL rules:
the same checks `kubectl apply` meets in production, before the operator runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import UnprocessibleEntityError

from tests.integration.rig.kube_helpers import install_crd

pytestmark = [pytest.mark.integration, pytest.mark.rig]

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "manifests" / "crd" / "dynamicmodels.driftline.io.yaml"
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))


@pytest.fixture(scope="module")
def dynamic_models(dyn: DynamicClient) -> Any:
    return install_crd(dyn, yaml.safe_load(CRD.read_text()))


def sample(name: str = "sea-demo.yaml") -> dict[str, Any]:
    model: dict[str, Any] = yaml.safe_load((REPO / "manifests" / "samples" / name).read_text())
    model["metadata"].pop("namespace", None)
    return model


def refusal(resource: Any, body: dict[str, Any], namespace: str) -> str:
    """Create with dryRun=All: validated completely, stored never. Returns the refusal."""
    with pytest.raises(UnprocessibleEntityError) as refused:
        resource.create(body=body, namespace=namespace, dry_run="All")
    text = refused.value.body
    return text.decode() if isinstance(text, bytes) else str(text)


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_samples_are_accepted(dynamic_models: Any, kube_namespace: str, path: Path) -> None:
    created = dynamic_models.create(body=sample(path.name), namespace=kube_namespace)
    # The API server applied the schema's defaults: no sample sets drift.backend.
    assert created.spec.drift.backend == "scipy"
    assert created.spec.inference.replicas.min <= created.spec.inference.replicas.max


def test_replicas_min_above_max_is_refused(dynamic_models: Any, kube_namespace: str) -> None:
    model = sample()
    model["spec"]["inference"]["replicas"] = {"min": 5, "max": 2}
    assert "replicas.min must not exceed replicas.max" in refusal(
        dynamic_models, model, kube_namespace
    )


def test_canary_steps_must_rise_to_100(dynamic_models: Any, kube_namespace: str) -> None:
    model = sample()
    model["spec"]["rollout"]["canary"]["steps"] = [50, 20, 100]
    assert "rollout.canary.steps must rise and end at 100" in refusal(
        dynamic_models, model, kube_namespace
    )
    model["spec"]["rollout"]["canary"]["steps"] = [20, 50]
    assert "must rise and end at 100" in refusal(dynamic_models, model, kube_namespace)


def test_plugin_learner_needs_an_entrypoint(dynamic_models: Any, kube_namespace: str) -> None:
    model = sample()
    model["spec"]["model"]["learner"] = {"type": "plugin"}
    assert "learner.type 'plugin' needs learner.entrypoint" in refusal(
        dynamic_models, model, kube_namespace
    )


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("drift", "detector"), "psi", "spec.drift.detector"),
        (("inference", "replicas", "min"), "two", "spec.inference.replicas.min"),
        (("training", "batchSize"), 0, "spec.training.batchSize"),
    ],
    ids=["enum", "type", "minimum"],
)
def test_schema_refuses_invalid_fields(
    dynamic_models: Any, kube_namespace: str, path: tuple[str, ...], value: Any, field: str
) -> None:
    model = copy.deepcopy(sample())
    node = model["spec"]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    assert field in refusal(dynamic_models, model, kube_namespace)
