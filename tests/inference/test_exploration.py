"""The exploration policy on served outputs: uniform and baseline, and their propensities."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from driftline.api.exploration import explores, uniform_label
from driftline.api.spec import ExplorationSpec
from driftline.inference.contract import Rows
from driftline.inference.exploration import Explorer, take

IDS = [f"r{i}" for i in range(200)]
ENTITIES: list[str | None] = [f"e{i % 50}" for i in range(200)]


def _outputs(n: int, label: int) -> list[Any]:
    scores = np.zeros((n, 3), np.float32)
    scores[:, label] = 0.9
    return [np.full(n, label, np.int64), scores]


class _Baseline:
    """Stands in for the baseline version: always answers class 2."""

    def __init__(self) -> None:
        self.asked = 0
        self.batcher = self

    def submit(self, rows: Rows) -> asyncio.Future[Any]:
        self.asked += rows.n
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(_outputs(rows.n, 2))
        return future


def _apply(spec: ExplorationSpec, baseline: Any = None) -> tuple[list[Any], Any]:
    state: Any = SimpleNamespace(baseline=baseline)
    rows = Rows(200, np.zeros((200, 1), np.float32), None, [(0.0,)] * 200)
    explorer = Explorer(spec, "m", 3)
    return asyncio.run(explorer.apply(state, rows, IDS, ENTITIES, _outputs(200, 1)))


def test_uniform_exploration_is_per_entity_and_leaves_the_model_s_outputs_alone() -> None:
    spec = ExplorationSpec(epsilon=0.3)
    outputs, (explored, served, odds) = _apply(spec)
    for i, entity in enumerate(ENTITIES):
        assert entity is not None
        if explores("m", entity, 0.3):
            label = uniform_label("m", entity, 3)
            assert explored[i] and served[i] == label and outputs[0][i] == label
            assert outputs[1][i].tolist() == [float(c == label) for c in range(3)]
            assert odds[i] == pytest.approx(0.7 * (label == 1) + 0.1)
        else:
            assert not explored[i] and served[i] is None and outputs[0][i] == 1
            assert odds[i] == pytest.approx(0.8)
    assert 0 < sum(explored) < 200
    # Every row of one entity gets the same decision.
    by_entity: dict[str | None, set[bool]] = {}
    for entity, flag in zip(ENTITIES, explored, strict=True):
        by_entity.setdefault(entity, set()).add(flag)
    assert all(len(flags) == 1 for flags in by_entity.values())
    part = take((explored, served, odds), [0, 5])
    assert part == ([explored[0], explored[5]], [served[0], served[5]], [odds[0], odds[5]])


def test_sticky_by_request_draws_each_request_apart() -> None:
    _, (explored, _, _) = _apply(ExplorationSpec(epsilon=0.3, sticky_by="request"))
    assert explored == [explores("m", r, 0.3) for r in IDS]


def test_baseline_exploration_serves_the_baseline_s_answer() -> None:
    baseline = _Baseline()
    outputs, (explored, served, odds) = _apply(
        ExplorationSpec(epsilon=0.3, policy="baseline"), baseline
    )
    assert baseline.asked == sum(explored) > 0  # scored for the explored rows only
    for i in range(200):
        if explored[i]:
            assert served[i] == 2 and outputs[0][i] == 2 and odds[i] == pytest.approx(0.3)
        else:
            assert outputs[0][i] == 1 and odds[i] == pytest.approx(0.7)


def test_baseline_exploration_without_a_baseline_explores_nothing() -> None:
    outputs, (explored, _, odds) = _apply(ExplorationSpec(epsilon=0.3, policy="baseline"))
    assert not any(explored) and set(odds) == {1.0} and (outputs[0] == 1).all()
