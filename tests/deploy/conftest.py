"""Fixtures of the chart tests: the deployment tools (helm, kubectl, checkov,
promtool, shellcheck, actionlint) and the chart rendered once per value set.

The tools are installed by tests/deploy/tools.sh into a cache outside the repo
(~/.cache/driftline-deploy): minutes once (helm is built from its Go module when
no helm is on PATH), a link check afterwards. When they cannot be installed the
tests fail with the reason; `DRIFTLINE_DEPLOY_TOOLS=off` skips them instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .chart import ROOT, VALUE_SETS, Tools, render

TOOLS_SCRIPT = ROOT / "tests" / "deploy" / "tools.sh"


@pytest.fixture(scope="session")
def tools() -> Tools:
    if os.environ.get("DRIFTLINE_DEPLOY_TOOLS", "").lower() == "off":
        pytest.skip("DRIFTLINE_DEPLOY_TOOLS=off")
    result = subprocess.run(
        ["bash", str(TOOLS_SCRIPT)], capture_output=True, text=True, timeout=1500, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"tests/deploy/tools.sh failed ({result.returncode}):\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return Tools(Path(result.stdout.strip().splitlines()[-1]) / "bin")


@pytest.fixture(scope="session")
def rendered(
    tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    """Every value set's manifests, CRD included."""
    folder = tmp_path_factory.mktemp("chart")
    return {name: render(tools, values, folder, name) for name, values in VALUE_SETS.items()}
