"""Fixtures of the real-pod suite: the deployment tools (helm, kubectl)."""

from __future__ import annotations

import pytest

from tests.deploy.chart import Tools, install_tools


@pytest.fixture(scope="session")
def tools() -> Tools:
    return install_tools()
