"""The control plane for the operator's scenarios: the test rig's real one when it is
built, else kmock's emulator (plane.py says what each one can show; scenarios that
need the real one are skipped on the emulator, with the reason in the summary).

`DRIFTLINE_RIG=off` chooses the emulator even when the rig is built.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.operator.kube import Kube, load_credentials
from driftline_testing import kube as kube_infra

from .emulator import running_emulator
from .plane import ControlPlane


def _rig_wanted() -> bool:
    return os.environ.get("DRIFTLINE_RIG", "").lower() != "off" and kube_infra.available()


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    folder = tmp_path_factory.mktemp("operator")
    if _rig_wanted():
        rig = request.getfixturevalue("kube")
        kube = Kube(load_credentials(rig.kubeconfig))
        plane = ControlPlane(
            rig.kubeconfig, real=True, kube=kube, logs=folder, component_logs=rig.log_dir
        )
        plane.install_crd()
        try:
            yield plane
        finally:
            kube.close()
        return
    with running_emulator(folder) as (emulator, kubeconfig):
        kube = Kube(load_credentials(kubeconfig))
        plane = ControlPlane(kubeconfig, real=False, kube=kube, emulator=emulator, logs=folder)
        plane.install_crd()
        try:
            yield plane
        finally:
            kube.close()


@pytest.fixture
def ns(control_plane: ControlPlane) -> Iterator[str]:
    name = control_plane.namespace(f"t-{uuid.uuid4().hex[:8]}")
    try:
        yield name
    finally:
        if control_plane.real:
            control_plane.kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path
