"""The images users deploy, built here from docker/*.Dockerfile: they start, they hold
the product and nothing of the test rig, inference carries no torch, they run as a
non-root user, and their sizes are recorded in benchmarks/results/images.md."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from driftline_testing.images import BuiltImage, DockerDaemon, ImageBuilder, write_report
from tests.integration.conftest import ROOT, SUITE_IMAGES

pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

# Looks for what an image must not hold: the test support, Driftline's tests/, the
# build context (/src) and the build tool's venv (/opt/uv).
LEFTOVERS = """
import importlib.util, os, sys
found = []
if importlib.util.find_spec("driftline_testing") is not None:
    found.append("driftline_testing importable")
for top in ("/opt", "/usr", "/home", "/srv", "/app"):
    for dirpath, dirnames, _ in os.walk(top):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if name == "driftline_testing" or path.endswith(("tests/rig", "tests/support")):
                found.append(path)
import driftline
for root in driftline.__path__:
    for near in (os.path.join(root, "tests"), os.path.join(root, "..", "tests")):
        if os.path.isdir(near):
            found.append(near)
found += [p for p in ("/src", "/opt/uv") if os.path.exists(p)]
print("\\n".join(found))
sys.exit(1 if found else 0)
"""


def python(daemon: DockerDaemon, image: BuiltImage, code: str) -> tuple[int, str]:
    result = daemon.run(image.ref, "-c", code, entrypoint="python")
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("name", SUITE_IMAGES)
def test_image_builds_and_reports_size(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon, name: str
) -> None:
    image = images[name]
    assert image.ref.startswith(f"driftline/{name}:k-")
    assert image.size_bytes == docker_daemon.image_size(image.ref) > 50e6


def test_operator_image_starts_the_operator(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon
) -> None:
    # The entrypoint's module, imported (running it would start serving, and needs a
    # cluster): kopf, the Kubernetes client and the handlers load, the settings parse.
    code = (
        "import driftline.operator.__main__ as m, driftline.operator.handlers\n"
        "from driftline.operator.settings import OperatorSettings\n"
        "print('ok', m.main.__name__, OperatorSettings().image_for('trainer'))"
    )
    rc, out = python(docker_daemon, images["operator"], code)
    assert rc == 0 and "ok main driftline/services:" in out, out
    # The operator's own CLI writes its install manifests.
    result = docker_daemon.run(
        images["operator"].ref, "-m", "driftline.operator.manifests", "--help", entrypoint="python"
    )
    assert result.returncode == 0 and "--out" in result.stdout, result.stderr
    inspect = docker_daemon.docker(
        "image", "inspect", "--format", "{{json .Config.Entrypoint}}", images["operator"].ref
    )
    assert json.loads(inspect.stdout) == ["python", "-m", "driftline.operator"]


def test_inference_image_has_no_torch(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon
) -> None:
    rc, out = python(
        docker_daemon,
        images["inference"],
        "import driftline.inference.__main__, onnxruntime, fastapi; print('ok')",
    )
    assert rc == 0 and "ok" in out, out
    for absent in ("torch", "alibi_detect"):
        rc, out = python(docker_daemon, images["inference"], f"import {absent}")
        assert rc != 0 and "ModuleNotFoundError" in out, f"{absent} imports:\n{out}"


def test_inference_image_holds_the_joiner(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon
) -> None:
    """The operator runs the joiner from the inference image: its entrypoint's module
    imports there (Kafka, Redis and msgspec clients, the health server) and its Redis
    scripts are in the installed package. It runs for real in tests/integration/pods
    (test_joiner_pod.py)."""
    code = (
        "import importlib.resources as r, driftline.joiner.__main__ as m\n"
        "from driftline.joiner.worker import JoinerWorker\n"
        "lua = r.files('driftline.joiner') / 'lua'\n"
        "print('ok', m.main.__name__, sorted(p.name for p in lua.iterdir()))"
    )
    rc, out = python(docker_daemon, images["inference"], code)
    assert rc == 0 and "ok main" in out and "'absorb.lua'" in out, out


def test_inference_image_holds_the_scipy_drift_monitor(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon
) -> None:
    """The operator runs the drift monitor on its default scipy backend from the
    inference image: its entrypoint's module and the scipy backend's detectors load
    there, without torch or alibi-detect (the services image's `drift-alibi`). It runs
    for real in tests/integration/pods (test_drift_pod.py)."""
    code = (
        "import sys, driftline.drift.__main__ as m\n"
        "from driftline.drift.worker import DriftWorker\n"
        "from driftline.drift.detectors import make_backend\n"
        "backend = make_backend('scipy')\n"
        "import numpy as np\n"
        "backend.ks(np.arange(100.0)).score(np.arange(50.0))\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'alibi_detect'))\n"
        "print('ok', m.main.__name__, heavy)"
    )
    rc, out = python(docker_daemon, images["inference"], code)
    assert rc == 0 and "ok main []" in out, out


def test_inference_image_checks_health_where_inference_answers(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon
) -> None:
    from driftline.inference.settings import InferenceSettings

    env = docker_daemon.docker(
        "image", "inspect", "--format", "{{json .Config.Env}}", images["inference"].ref
    )
    port = InferenceSettings.model_fields["port"].default
    assert f"DRIFTLINE_HEALTH_URL=http://127.0.0.1:{port}/healthz" in json.loads(env.stdout)


@pytest.mark.parametrize("name", SUITE_IMAGES)
def test_image_holds_no_test_rig(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon, name: str
) -> None:
    rc, out = python(docker_daemon, images[name], LEFTOVERS)
    assert rc == 0, f"{name} holds:\n{out}"


@pytest.mark.parametrize("name", SUITE_IMAGES)
def test_image_runs_as_non_root(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon, name: str
) -> None:
    ref = images[name].ref
    user = docker_daemon.docker("image", "inspect", "--format", "{{.Config.User}}", ref)
    assert user.stdout.strip() == "10001:10001"
    rc, out = python(docker_daemon, images[name], "import os; print(os.getuid(), os.getgid())")
    assert rc == 0 and out.split() == ["10001", "10001"], out


def test_unchanged_tree_reuses_the_images(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon, tmp_path: Path
) -> None:
    builder = ImageBuilder(docker_daemon, ROOT, log_dir=tmp_path)
    started = time.monotonic()
    again = builder.build("operator")
    assert again.reused and again.ref == images["operator"].ref
    assert time.monotonic() - started < 30


def test_image_saves_to_a_tarball(
    images: dict[str, BuiltImage], docker_daemon: DockerDaemon, tmp_path: Path
) -> None:
    """What the real node imports (`ctr images import`)."""
    path = docker_daemon.save(images["operator"].ref, tmp_path / "operator.tar")
    with tarfile.open(path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [images["operator"].ref]


def test_sizes_are_recorded(images: dict[str, BuiltImage]) -> None:
    report = write_report(list(images.values()), ROOT / "benchmarks" / "results")
    text = report.read_text()
    for name in SUITE_IMAGES:
        assert f"| `driftline/{name}` | {round(images[name].size_mb)} |" in text


# Dev mode's servers: each image's own version command, run as the image's user.
DEV_VERSIONS = {
    "dev-redis": (["redis-server", "--version"], r"Redis server v=7\."),
    "dev-kafka": (["kafka-server-start.sh", "--version"], r"^{kafka}\b"),
    "dev-mlflow": (["mlflow", "--version"], r"version {mlflow}$"),
}


@pytest.mark.parametrize("name", sorted(DEV_VERSIONS))
def test_dev_image_runs_its_server_as_non_root_at_the_pinned_version(
    image_builder: ImageBuilder, docker_daemon: DockerDaemon, name: str
) -> None:
    """Kafka at the version the rig's broker runs, MLflow at the project's pin."""
    import re

    image = image_builder.build(name)
    kafka = re.search(
        r"<kafka\.version>(.+?)</kafka\.version>", (ROOT / "tests/rig/pom.xml").read_text()
    )
    image_pom = (ROOT / "docker/dev/kafka/pom.xml").read_text()
    assert kafka is not None and f"<kafka.version>{kafka.group(1)}</kafka.version>" in image_pom
    mlflow = re.search(r"^mlflow==(\S+)", (ROOT / "requirements/constraints.txt").read_text(), re.M)
    assert mlflow is not None
    argv, pattern = DEV_VERSIONS[name]
    expected = pattern.format(kafka=re.escape(kafka.group(1)), mlflow=re.escape(mlflow.group(1)))
    user = docker_daemon.docker("image", "inspect", "--format", "{{.Config.User}}", image.ref)
    assert user.stdout.strip() == "10001:10001"
    result = docker_daemon.run(image.ref, "-c", 'id -u; exec "$@"', "sh", *argv, entrypoint="sh")
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 0 and lines[0] == "10001", lines
    assert any(re.search(expected, line) for line in lines[1:]), lines
