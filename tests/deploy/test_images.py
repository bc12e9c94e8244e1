"""The Dockerfiles: hadolint clean, and the habits the images promise: multi-stage,
pinned bases, dependencies in a layer before the source, a non-root user, a
healthcheck; `make images` builds what the test rig builds and pushes to a registry.
(tests/integration/images builds and runs the images.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from driftline_testing.images import IMAGES

from .chart import ROOT, Tools, run

pytestmark = pytest.mark.timeout(1800)

DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
# Dev mode's servers (Redis, Kafka, MLflow): not Driftline's code, so not its habits.
DEV_DOCKERFILES = sorted((ROOT / "docker" / "dev").glob("*.Dockerfile"))


def test_hadolint(tools: Tools) -> None:
    assert (len(DOCKERFILES), len(DEV_DOCKERFILES)) == (3, 3)
    run([tools["hadolint"], "--no-color", *map(str, DOCKERFILES + DEV_DOCKERFILES)])
    run(
        [
            tools["shellcheck"],
            *map(str, sorted((ROOT / "docker" / "dev" / "kafka" / "bin").iterdir())),
        ]
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_habits(path: Path) -> None:
    text = path.read_text()
    lines = [line.strip() for line in text.splitlines()]
    bases = re.findall(r"^ARG (?:PYTHON|CUDA)_IMAGE=(\S+)$", text, re.MULTILINE)
    assert bases and all(re.search(r":\d+\.\d+\.\d+", b) for b in bases), "pin the base image"
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    # Build stages may run on BUILD_IMAGE (a base with a proxy's CA); the image never.
    assert froms[-1] in ("FROM ${PYTHON_IMAGE}", "FROM ${CUDA_IMAGE}"), froms[-1]
    deps = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.txt" in line)
    source = next(i for i, line in enumerate(lines) if line.startswith("COPY services"))
    assert deps < source, "dependencies install before the source is copied"
    assert "USER 10001:10001" in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines)


def test_make_images_builds_and_pushes_to_a_registry(tmp_path: Path) -> None:
    """`make images REGISTRY=... IMAGE_TAG=... PUSH=1` with the `docker` on PATH (a
    stand-in that records its arguments): the images the test rig builds, the same
    Dockerfiles and build arguments, tagged into the registry, then pushed."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    argv = ["make", "-s", "images", "REGISTRY=registry.example.com/team", "IMAGE_TAG=0.1.0"]
    subprocess.run([*argv, "PUSH=1"], cwd=ROOT, env=env, check=True, capture_output=True)
    lines = calls.read_text().splitlines()
    builds = [line for line in lines if line.startswith("build ")]
    assert len(builds) == len(IMAGES)
    for spec in IMAGES.values():
        ref = f"registry.example.com/team/{spec.repository}:0.1.0"
        build = next(line for line in builds if line.endswith(f"-t {ref} ."))
        assert f"-f {spec.dockerfile} " in build
        for arg, value in spec.build_args:
            assert f"--build-arg {arg}={value}" in build
        assert lines.index(f"push {ref}") > lines.index(build)
    # Without PUSH nothing leaves the machine.
    calls.unlink()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    assert not any(line.startswith("push") for line in calls.read_text().splitlines())
