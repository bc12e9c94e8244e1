"""The deployment tools for the chart's scenarios on the test rig."""

from __future__ import annotations

import pytest

from tests.deploy.chart import Tools, install_tools


@pytest.fixture(scope="session")
def tools() -> Tools:
    return install_tools()
