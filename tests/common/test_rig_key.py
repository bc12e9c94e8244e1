"""build.sh and the Python launchers agree on where the rig is cached."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from driftline_testing.rig import pin_dir, rig_layout

REPO = Path(__file__).resolve().parents[2]


def test_build_script_and_launchers_find_the_same_rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_RIG_CACHE", str(tmp_path))
    monkeypatch.delenv("DRIFTLINE_RIG_DIR", raising=False)
    printed = subprocess.run(
        ["bash", str(REPO / "tests" / "rig" / "build.sh"), "--print"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    layout = rig_layout()
    assert pin_dir() == REPO / "tests" / "rig"
    assert Path(printed) == layout.root
    assert layout.root.name.startswith("k8s-v1.")


def test_an_explicit_rig_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_RIG_DIR", str(tmp_path))
    layout = rig_layout()
    assert layout.root == tmp_path
    assert not layout.kubernetes_built and not layout.kafka_built
