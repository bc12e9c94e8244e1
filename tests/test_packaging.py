"""What ships: the wheel (and so every image, which installs it) holds the product only.

The test support (`driftline_testing`: the rig's launchers, throwaway certificate
authorities, test models) lives under tests/ and is importable in a development
install only. Here the wheel is built as an image builds it, and its contents are
read: no test support, no test rig, and the embedded servers only in the local
runtime's package. The images' build context leaves tests/ out as well.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("driftline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_every_part(wheel_files: list[str]) -> None:
    for part in ("api", "common", "client", "inference", "joiner", "trainer", "drift", "rollout"):
        assert f"driftline/{part}/__init__.py" in wheel_files
    assert "driftline/operator/__init__.py" in wheel_files
    assert "driftline/local/servers/__init__.py" in wheel_files


def test_the_wheel_holds_no_test_support(wheel_files: list[str]) -> None:
    rig_modules = {p.name for p in (ROOT / "tests/support/driftline_testing").glob("*.py")}
    leaks = [
        name
        for name in wheel_files
        if name.startswith(("driftline_testing/", "tests/"))
        or name.endswith("/testing.py")
        or (
            name.startswith("driftline/common/")  # the floor every image installs
            and name.rsplit("/", 1)[-1] in rig_modules - {"__init__.py"}
        )
        or "apache_kafka" in name
        or "kafka_security" in name
    ]
    assert not leaks, f"test support in the wheel: {leaks}"


def test_the_images_build_context_leaves_tests_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "tests" in ignored
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        copies = [line for line in dockerfile.read_text().splitlines() if line.startswith("COPY")]
        assert not [c for c in copies if " tests" in c], f"{dockerfile.name} copies tests/"
