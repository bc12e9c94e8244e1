"""Golden files: every builder's output for each scenario, one file per object.

A change to a builder shows up as a readable diff of YAML. After an intended
change, regenerate with `DRIFTLINE_UPDATE_GOLDEN=1 pytest tests/operator` and
review the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from driftline.operator.builders import build_children

from .conftest import GOLDEN, dump, scenarios

UPDATE = os.environ.get("DRIFTLINE_UPDATE_GOLDEN") == "1"
SCENARIOS = scenarios()


def rendered(name: str) -> dict[str, str]:
    children = build_children(SCENARIOS[name])
    return {f"{m['kind'].lower()}-{m['metadata']['name']}.yaml": dump(m) for m in children.all()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_builders_match_golden_files(name: str) -> None:
    folder = GOLDEN / name
    files = rendered(name)
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.yaml"):
            if stale.name not in files:
                stale.unlink()
        for file, text in files.items():
            (folder / file).write_text(text)
    committed = {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}
    assert sorted(committed) == sorted(files), "objects added or removed: regenerate and review"
    for file, text in files.items():
        assert committed[file] == text, f"{name}/{file} differs from the golden file"


def test_every_builder_has_a_golden_file() -> None:
    kinds = {p.name.split("-", 1)[0] for p in Path(GOLDEN).glob("*/*.yaml")}
    assert kinds == {
        "serviceaccount",
        "cronjob",
        "configmap",
        "persistentvolumeclaim",
        "networkpolicy",
        "service",
        "deployment",
        "statefulset",
        "job",
        "poddisruptionbudget",
        "horizontalpodautoscaler",
        "triggerauthentication",
        "scaledobject",
        "httpscaledobject",
        "servicemonitor",
        "nodepool",
    }
