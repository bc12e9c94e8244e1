"""Render the chart with the real `helm` and read what it wrote.

The value sets every chart test renders: the defaults (what `helm install` gives),
dev mode with every monitoring object, and an operator that watches a list of
namespaces (Roles instead of the ClusterRole), and the e2e run's values.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "driftline"
NAMESPACE = "driftline-system"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "dev-and-monitoring": {
        "dev": {"enabled": True},
        "monitoring": {
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboards": {"enabled": True},
            "scrapeConfigs": {"enabled": True},
        },
    },
    "watch-namespaces": {"operator": {"watchNamespaces": ["ml", "fraud"]}},
    "e2e": yaml.safe_load((ROOT / "e2e" / "values.yaml").read_text()),
}


@dataclass(frozen=True)
class Tools:
    """Paths of the deployment tools (tests/deploy/tools.sh puts them in one bin/)."""

    bin: Path

    def __getitem__(self, name: str) -> str:
        return str(self.bin / name)


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        command = " ".join(argv[:3])
        raise AssertionError(
            f"{command} ... exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def values_file(values: dict[str, Any], folder: Path, name: str) -> Path:
    path = folder / f"{name}.values.json"
    path.write_text(json.dumps(values))
    return path


def render_text(
    tools: Tools, values: dict[str, Any], folder: Path, name: str = "values", *extra: str
) -> str:
    argv = [tools["helm"], "template", "driftline", str(CHART), "--namespace", NAMESPACE]
    argv += ["--include-crds", "-f", str(values_file(values, folder, name)), *extra]
    return run(argv).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(
    tools: Tools, values: dict[str, Any], folder: Path, name: str = "values"
) -> list[dict[str, Any]]:
    return documents(render_text(tools, values, folder, name))


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs}


def install_tools() -> Tools:
    """Runs tests/deploy/tools.sh (a link check when warm); fails with its reason."""
    if os.environ.get("DRIFTLINE_DEPLOY_TOOLS", "").lower() == "off":
        pytest.skip("DRIFTLINE_DEPLOY_TOOLS=off")
    script = ROOT / "tests" / "deploy" / "tools.sh"
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=1500, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"tests/deploy/tools.sh failed ({result.returncode}):\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return Tools(Path(result.stdout.strip().splitlines()[-1]) / "bin")
