"""Fixtures of the integration tests that need more than one folder: Driftline's
images, built by a Docker engine of the tests' own (`driftline_testing.images`), for
tests/integration/images and the real node's Pods (tests/integration/pods).

The engine needs Debian's `docker.io` and `debootstrap` (`.ci/run` installs them): the
tests fail without them, never skip, except under `DRIFTLINE_RIG=off` like the other
rig tests. Images are tagged by content and kept in ~/.cache/driftline-images, so a
warm run builds nothing; a cold one builds the Debian base and the images (minutes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline_testing.images import BuiltImage, DockerDaemon, ImageBuilder, missing_tools

ROOT = Path(__file__).resolve().parents[2]
# The images the suite builds: the torch-carrying services image is measured by hand
# (`python -m driftline_testing.images services --report benchmarks/results`).
SUITE_IMAGES = ("operator", "inference")


@pytest.fixture(scope="session")
def docker_daemon(infra_logs: Path) -> Iterator[DockerDaemon]:
    if os.environ.get("DRIFTLINE_RIG", "").lower() == "off":
        pytest.skip("DRIFTLINE_RIG=off: the test rig is not used")
    missing = missing_tools()
    if missing:
        pytest.fail(f"building images needs `apt-get install {' '.join(missing)}`")
    with DockerDaemon(log_path=infra_logs / "dockerd.log") as daemon:
        yield daemon


@pytest.fixture(scope="session")
def image_builder(docker_daemon: DockerDaemon, infra_logs: Path) -> ImageBuilder:
    """Builds one image of this tree when asked (or finds it by its content key)."""
    return ImageBuilder(docker_daemon, ROOT, log_dir=infra_logs / "image-builds")


@pytest.fixture(scope="session")
def images(image_builder: ImageBuilder) -> dict[str, BuiltImage]:
    """The suite's images, built (or found by their content key) once per session."""
    return {name: image_builder.build(name) for name in SUITE_IMAGES}
