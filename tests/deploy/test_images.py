"""The Dockerfiles (no Docker here to build them): hadolint clean, and the habits
the images promise: multi-stage, pinned bases, dependencies in a layer before the
source, a non-root user, a healthcheck."""

from __future__ import annotations

import re

import pytest

from .chart import ROOT, Tools, run

pytestmark = pytest.mark.timeout(1800)

DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def test_hadolint(tools: Tools) -> None:
    assert len(DOCKERFILES) == 3
    run([tools["hadolint"], "--no-color", *map(str, DOCKERFILES)])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_habits(path: object) -> None:
    text = path.read_text()  # type: ignore[attr-defined]
    lines = [line.strip() for line in text.splitlines()]
    bases = re.findall(r"^ARG (?:PYTHON|CUDA)_IMAGE=(\S+)$", text, re.MULTILINE)
    assert bases and all(re.search(r":\d+\.\d+\.\d+", b) for b in bases), "pin the base image"
    assert sum(line.startswith("FROM ") for line in lines) >= 2, "multi-stage"
    deps = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.txt" in line)
    source = next(i for i, line in enumerate(lines) if line.startswith("COPY services"))
    assert deps < source, "dependencies install before the source is copied"
    assert "USER 10001:10001" in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines)
