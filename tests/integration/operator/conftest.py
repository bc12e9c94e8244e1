"""The control plane for the operator's scenarios: the test rig when built, else kmock's
emulator (see plane.py for what each one can show)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.operator.kube import Kube, load_credentials

from .emulator import running_emulator
from .plane import ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    folder = tmp_path_factory.mktemp("operator")
    with running_emulator(folder) as (emulator, kubeconfig):
        kube = Kube(load_credentials(kubeconfig))
        plane = ControlPlane(kubeconfig, real=False, kube=kube, emulator=emulator, logs=folder)
        plane.install_crd()
        try:
            yield plane
        finally:
            kube.close()


@pytest.fixture
def ns(control_plane: ControlPlane) -> str:
    return control_plane.namespace(f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path
