"""What can be checked of the kind e2e without Docker: its scripts and workflow lint
clean, the Jobs it creates are valid, and the sample it edits still has the lines
it replaces."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from .chart import ROOT, Tools, run

pytestmark = pytest.mark.timeout(1800)

SCRIPTS = [ROOT / "e2e" / "run.sh", ROOT / "tests" / "deploy" / "tools.sh"]


def test_shellcheck(tools: Tools) -> None:
    run([tools["shellcheck"], "--severity=style", *map(str, SCRIPTS)])


def test_actionlint(tools: Tools) -> None:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert workflows
    # actionlint runs shellcheck on the `run:` blocks when it finds it on PATH.
    env_path = f"{tools.bin}"
    result = subprocess.run(
        [tools["actionlint"], *map(str, workflows)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{env_path}:/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _jobs() -> list[dict[str, object]]:
    """The Jobs e2e/run.sh applies, from its own `job` function."""
    script = (
        'eval "$(sed -n "/^job() {/,/^}/p" e2e/run.sh)"; '
        'job bootstrap "[python, -m, driftline.trainer, bootstrap]"; echo ---; '
        'job traffic "[python, /e2e/traffic.py, --url, \\"http://sea-inference.demo.svc:8080\\"]"'
    )
    env = {"TAG": "e2e", "NS": "demo", "MODEL": "sea", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_e2e_jobs_are_valid() -> None:
    jobs = _jobs()
    assert [j["metadata"]["name"] for j in jobs] == ["bootstrap", "traffic"]  # type: ignore[index]
    for job in jobs:
        kubernetes_validate.validate(job, "1.29", strict=True)
    command = jobs[1]["spec"]["template"]["spec"]["containers"][0]["command"]  # type: ignore[index]
    assert command[-1] == "http://sea-inference.demo.svc:8080"


def test_the_sample_still_has_what_the_e2e_replaces() -> None:
    sample = (ROOT / "manifests" / "samples" / "sea-demo.yaml").read_text()
    script = (ROOT / "e2e" / "run.sh").read_text()
    for literal in ("http://127.0.0.1:5000", "127.0.0.1:9092", "redis://127.0.0.1:6379/0"):
        assert literal in sample
        assert f"s#{literal}#" in script
    assert yaml.safe_load(sample)["metadata"] == {"name": "sea", "namespace": "demo"}


def test_e2e_traffic_is_importable_python() -> None:
    compile(Path(ROOT / "e2e" / "traffic.py").read_text(), "traffic.py", "exec")
