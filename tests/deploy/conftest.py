"""Fixtures of the chart tests: the deployment tools (helm, kubectl, checkov,
promtool, shellcheck, actionlint) and the chart rendered once per value set.

The tools are installed by tests/deploy/tools.sh into a cache outside the repo
(~/.cache/driftline-deploy): minutes once (helm is built from its Go module when
no helm is on PATH), a link check afterwards. When they cannot be installed the
tests fail with the reason; `DRIFTLINE_DEPLOY_TOOLS=off` skips them instead.
"""

from __future__ import annotations

from typing import Any

import pytest

from .chart import VALUE_SETS, Tools, install_tools, render


@pytest.fixture(scope="session")
def tools() -> Tools:
    return install_tools()


@pytest.fixture(scope="session")
def rendered(
    tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    """Every value set's manifests, CRD included."""
    folder = tmp_path_factory.mktemp("chart")
    return {name: render(tools, values, folder, name) for name, values in VALUE_SETS.items()}
