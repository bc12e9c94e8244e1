"""The rendered chart passes checkov's Kubernetes checks, except where a finding is
accepted below, for the named resources only, with the reason.

checkov runs from its own virtualenv (tests/deploy/tools.sh): it pins its
dependencies tightly. A finding not listed fails the test, and so does a listed
exception that no longer matches anything (it would hide a future finding).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .chart import VALUE_SETS, Tools, render_text

pytestmark = pytest.mark.timeout(1800)

OPERATOR = "Deployment.driftline-system.driftline-operator"
DEV = {f"Deployment.driftline-system.driftline-{name}" for name in ("redis", "mlflow", "kafka")}
EVERY_POD = {OPERATOR, *DEV}

# check id -> (resources it is accepted for, why)
ACCEPTED: dict[str, tuple[set[str], str]] = {
    "CKV_K8S_11": (
        EVERY_POD,
        "CPU limits: left out on purpose. A CPU limit throttles a busy process even when "
        "the node is idle (the operator's reconcile bursts, Kafka's start); CPU requests "
        "reserve what each needs, and memory has requests and limits.",
    ),
    "CKV_K8S_15": (
        EVERY_POD,
        "imagePullPolicy Always: images are pinned to release tags, which never move; "
        "IfNotPresent lets pods restart while the registry is away and lets kind use "
        "images loaded into its nodes. `image.pullPolicy` sets Always where wanted.",
    ),
    "CKV_K8S_38": (
        {OPERATOR},
        "Service account token: the operator is a Kubernetes client and needs it; every "
        "other pod sets automountServiceAccountToken: false (test below).",
    ),
    "CKV_K8S_43": (
        EVERY_POD,
        "Image digests: the defaults name release tags so that one values file works for "
        "every release; `image.operatorDigest` (and full references with @sha256 for the "
        "dev images) pin digests where policy asks for them.",
    ),
}


def _findings(tools: Tools, folder: Path) -> set[tuple[str, str]]:
    result = subprocess.run(
        [
            tools["checkov"],
            "--directory",
            str(folder),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            "--skip-download",  # no network: the checks ship with checkov
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode not in (0, 1):  # 1: findings
        pytest.fail(f"checkov failed ({result.returncode}):\n{result.stderr[-3000:]}")
    report: Any = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    return {(c["check_id"], c["resource"]) for c in failed}


def test_checkov_kubernetes_checks(tools: Tools, tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    for name, values in VALUE_SETS.items():  # one checkov run: its start is most of the time
        (folder / f"{name}.yaml").write_text(render_text(tools, values, tmp_path, name))
    findings = _findings(tools, folder)
    unexplained = sorted(
        (check, resource)
        for check, resource in findings
        if resource not in ACCEPTED.get(check, (set(), ""))[0]
    )
    assert not unexplained, f"checkov findings without a reason in ACCEPTED: {unexplained}"
    stale = sorted(
        (check, resource)
        for check, (resources, _) in ACCEPTED.items()
        for resource in resources
        if (check, resource) not in findings
    )
    assert not stale, f"accepted findings that checkov no longer reports: {stale}"


def test_only_the_operator_mounts_a_service_account_token(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for doc in rendered["dev-and-monitoring"]:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        mounts = pod.get("automountServiceAccountToken", True)
        assert mounts == (doc["metadata"]["name"] == "driftline-operator"), doc["metadata"]["name"]
