"""The parts table: one row per part, and everything that runs parts agrees with it."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.api import PARTS
from driftline.api.parts import DRIFT, INFERENCE, JOINER, ROLLOUT, TRAINER, Part, part_named
from driftline.local.parts import ALL_PARTS, parts_by_name
from driftline.operator.builders import build_children
from driftline.operator.builders.parts import active_parts
from tests.operator.conftest import sample, scenarios

SETTINGS = {
    "inference": "InferenceSettings",
    "joiner": "JoinerSettings",
    "trainer": "TrainerSettings",
    "drift": "DriftSettings",
    "rollout": "RolloutSettings",
}


def test_names_are_unique_and_every_part_has_a_main_module() -> None:
    names = [p.name for p in PARTS]
    assert len(set(names)) == len(names)
    for part in PARTS:
        spec = importlib.util.find_spec(part.module)  # the package only, not its imports
        assert spec is not None and spec.submodule_search_locations, part.module
        mains = [Path(d) / "__main__.py" for d in spec.submodule_search_locations]
        assert any(m.is_file() for m in mains), f"python -m {part.module} has no __main__"


def test_consumer_groups_keep_their_names() -> None:
    assert JOINER.group_id("fraud-detector") == "driftline-fraud-detector-joiner"
    assert TRAINER.group_id("fraud-detector") == "driftline-fraud-detector-trainer"
    assert DRIFT.group_id("fraud-detector") == "driftline-fraud-detector-drift"
    for producer_only in (INFERENCE, ROLLOUT):
        with pytest.raises(ValueError, match="no group"):
            producer_only.group_id("fraud-detector")


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.name)
def test_each_settings_class_reads_the_parts_env_prefix(part: Part) -> None:
    module = importlib.import_module(f"{part.module}.settings")
    settings = getattr(module, SETTINGS[part.name])
    assert settings.model_config["env_prefix"] == part.env_prefix
    if part.data_setting is not None:
        assert part.data_setting.lower() in settings.model_fields


def test_lookup_by_name() -> None:
    assert part_named("trainer") is TRAINER
    with pytest.raises(ValueError, match="choose from"):
        part_named("router")


def test_operator_deploys_every_part_but_the_rollout() -> None:
    ctx = scenarios()["fraud-detector"]
    deployments = [m for m in build_children(ctx).all() if m["kind"] == "Deployment"]
    commands = {
        c["command"][-1] for d in deployments for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert commands == {p.module for p in PARTS if p.deployed}
    assert [p.name for p in PARTS if not p.deployed] == ["rollout"]  # the operator's timer
    training_off = sample("minimal", training__mode="off")
    assert TRAINER not in active_parts(training_off)


def test_local_runtime_starts_every_part_as_a_process() -> None:
    assert [p.part for p in ALL_PARTS] == list(PARTS)
    assert [p.name for p in parts_by_name(None)] == [p.name for p in PARTS]
    assert all(p.argv()[1:] == ["-m", p.part.module] for p in ALL_PARTS)


def test_the_table_stays_light() -> None:
    """Importing the table loads nothing of the other floors and no heavy library."""
    code = "import sys, driftline.api.parts; print(' '.join(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(run.stdout.split())
    ours = {m for m in loaded if m.startswith("driftline.")}
    assert all(m.startswith("driftline.api") for m in ours), ours
    assert not loaded & {"torch", "mlflow", "confluent_kafka", "redis", "onnxruntime"}
