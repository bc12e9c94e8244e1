"""Fixtures of the real-pod suite: the deployment tools (helm, kubectl), and both as
the real node's admin."""

from __future__ import annotations

import pytest

from driftline_testing.node import NodeStack
from tests.deploy.chart import Tools, install_tools
from tests.integration.pods.cluster import Kube


@pytest.fixture(scope="session")
def tools() -> Tools:
    return install_tools()


@pytest.fixture(scope="module")
def kube(real_node: NodeStack, tools: Tools) -> Kube:
    assert real_node.plane is not None
    return Kube(tools, real_node.plane.kubeconfig)
