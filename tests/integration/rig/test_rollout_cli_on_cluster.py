"""`driftline rollout approve|abort --model NAME` on a real API server: the decision is
written as the DynamicModel's annotations, which the operator reads as the same
command (its handling is tested in tests/integration/operator/test_rollout_timer.py).
A model that does not exist is a clear error, not a crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from driftline.api.resource import ROLLOUT_ANNOTATION, ROLLOUT_REASON_ANNOTATION
from driftline.operator.rollout_commands import requested
from driftline_testing.kube import ControlPlane
from tests.integration.rig.kube_helpers import install_crd

pytestmark = [pytest.mark.integration, pytest.mark.rig]

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "manifests" / "crd" / "dynamicmodels.driftline.io.yaml"


@pytest.fixture(scope="module")
def dynamic_models(dyn: DynamicClient) -> Any:
    return install_crd(dyn, yaml.safe_load(CRD.read_text()))


def cli(kube: ControlPlane, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.local.cli", "rollout", *argv],
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_approve_and_abort_are_written_as_annotations_the_operator_reads(
    kube: ControlPlane, dynamic_models: Any, kube_namespace: str
) -> None:
    model = yaml.safe_load((REPO / "manifests" / "samples" / "sea-demo.yaml").read_text())
    model["metadata"].pop("namespace", None)
    dynamic_models.create(body=model, namespace=kube_namespace)

    done = cli(kube, "approve", "--model", "sea", "--namespace", kube_namespace)
    assert done.returncode == 0, done.stderr
    annotations = dict(
        dynamic_models.get(name="sea", namespace=kube_namespace).metadata.annotations
    )
    assert annotations[ROLLOUT_ANNOTATION] == "approve"
    asked = requested(annotations, candidate="4")
    assert asked is not None and asked.command is not None
    assert (asked.command.action, asked.command.version) == ("approve", "4")

    done = cli(kube, "abort", "--model", "sea", "--namespace", kube_namespace,
               "--version", "7", "--reason", "p99 too high")  # fmt: skip
    assert done.returncode == 0, done.stderr
    annotations = dict(
        dynamic_models.get(name="sea", namespace=kube_namespace).metadata.annotations
    )
    assert annotations[ROLLOUT_ANNOTATION] == "abort:7"
    assert annotations[ROLLOUT_REASON_ANNOTATION] == "p99 too high"
    asked = requested(annotations, candidate="8")  # a newer candidate is not the one meant
    assert asked is not None and asked.command is not None
    assert (asked.command.action, asked.command.version, asked.command.reason) == (
        "abort",
        "7",
        "p99 too high",
    )


def test_a_model_that_is_not_there_is_a_clear_error(
    kube: ControlPlane, dynamic_models: Any, kube_namespace: str
) -> None:
    done = cli(kube, "approve", "--model", "nowhere", "--namespace", kube_namespace)
    assert done.returncode == 1
    assert f"dynamicmodel {kube_namespace}/nowhere: 404" in done.stderr
    assert "Traceback" not in done.stderr
