"""The online learner learns, keeps old regions under covariate shift, and lets a new concept in."""

from __future__ import annotations

import copy
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from driftline.common.streams import AgrawalStream, CovariateShiftStream, SEAStream
from driftline.trainer.checkpoint import from_bytes, learner_state, restore_learner, to_bytes
from driftline.trainer.examples import Examples, holdout_mask
from driftline.trainer.learner import OnlineLearner
from driftline.trainer.nets import LearnerError

LearnerFactory = Callable[..., OnlineLearner]
ExamplesOf = Callable[..., Examples]


def stream_through(
    learner: OnlineLearner, stream, rows: int, examples_of: ExamplesOf, block: int = 500
):  # type: ignore[no-untyped-def]
    """Learn `rows` rows in blocks, each labeled with what a frozen copy (the stable
    version) served for it, as the joiner would. Returns the learn reports."""
    serving = copy.deepcopy(learner.net).eval()
    reports = []
    for _ in range(rows // block):
        batch = stream.take(block)
        ex = examples_of(learner, batch)
        with torch.no_grad():
            logits = serving(torch.from_numpy(ex.numeric), torch.from_numpy(ex.codes))
        served = logits.argmax(dim=1).numpy().astype(np.float32)
        reports.append(learner.learn(examples_of(learner, batch, served)))
    return reports


def bootstrapped(
    learner: OnlineLearner, stream, rows: int, examples_of: ExamplesOf
) -> OnlineLearner:  # type: ignore[no-untyped-def]
    ex = examples_of(learner, stream.take(rows))
    learner.observe(ex)
    learner.fit_offline(ex, passes=3)
    return learner


@pytest.mark.parametrize("kind", ["mlp", "logistic"])
def test_learning_improves_the_score(
    kind: str, make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    stream = SEAStream(seed=0)
    learner = make_learner(stream, {"type": kind, "hidden": [16]})
    test = examples_of(learner, SEAStream(seed=99).take(2000))
    before = learner.score(test)
    stream_through(learner, stream, 6000, examples_of)
    assert learner.score(test) > max(before, 0.9)
    assert learner.seq == 6000 and len(learner.holdout.latest(0)) > 400


def test_regression_learns(make_learner: LearnerFactory, examples_of: ExamplesOf) -> None:
    stream = CovariateShiftStream(seed=1, task="regression", noise=0.1)
    learner = make_learner(stream)
    for _ in range(12):
        learner.learn(examples_of(learner, stream.take(500)))
    assert learner.score(examples_of(learner, stream.take(1000))) > 0.8


def old_region_loss(
    replay: float, ewc: float, make_learner: LearnerFactory, examples_of: ExamplesOf
) -> tuple[float, float]:
    stream = CovariateShiftStream(seed=3, schedule=[(0, 0), (6000, 1)])
    old_test = CovariateShiftStream(seed=4).take(2000)
    learner = make_learner(
        stream, replay_fraction=replay, ewc_lambda=ewc, replay_capacity=5000, detect_concept=False
    )
    old = examples_of(learner, old_test)
    learner.learn(examples_of(learner, stream.take(6000)))
    learner.refresh_ewc()
    before = learner.score(old)
    for _ in range(16):
        learner.learn(examples_of(learner, stream.take(500)))
    new = learner.score(
        examples_of(learner, CovariateShiftStream(seed=5, schedule=[(0, 1)]).take(2000))
    )
    return before - learner.score(old), new


def test_replay_keeps_the_old_region(make_learner: LearnerFactory, examples_of: ExamplesOf) -> None:
    plain_loss, plain_new = old_region_loss(0.0, 0.0, make_learner, examples_of)
    replay_loss, replay_new = old_region_loss(0.5, 50.0, make_learner, examples_of)
    assert plain_loss > 0.03, plain_loss  # the stream really makes a plain learner forget
    assert replay_loss < plain_loss / 2
    assert replay_new > plain_new - 0.03


def test_concept_change_opens_an_epoch(
    make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    stream = AgrawalStream(seed=0, schedule=[(0, 0), (13_000, 2)])
    learner = bootstrapped(make_learner(stream, replay_capacity=4000), stream, 5000, examples_of)
    reports = stream_through(learner, stream, 11_000, examples_of)
    opened = [(i, r.concept) for i, r in enumerate(reports) if r.concept is not None]
    assert len(opened) == 1, opened
    block, record = opened[0]
    assert 16 <= block <= 18  # found within 1500 rows of the switch at row 13000
    assert record.epoch == learner.epoch == 1
    assert 12_800 <= record.start_seq <= 13_600  # where the rise began
    assert not learner.ewc.active  # the EWC anchor was dropped
    idx, _ = learner.replay.sample(500, learner.rng)
    assert (learner.replay.seq[idx] >= record.start_seq).all()  # old concept rows retired
    test = examples_of(learner, AgrawalStream(seed=7, schedule=[(0, 2)]).take(2000))
    assert learner.score(test) > 0.8


def test_covariate_shift_keeps_the_epoch(
    make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    stream = CovariateShiftStream(seed=2, schedule=[(0, 0), (8000, 2)])
    learner = bootstrapped(make_learner(stream), stream, 3000, examples_of)
    reports = stream_through(learner, stream, 8000, examples_of)
    assert learner.epoch == 0
    assert [r.covariate for r in reports if r.covariate]  # the error rose: a covariate shift


def test_state_round_trip_continues_identically(
    make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    stream = AgrawalStream(seed=5)
    a = make_learner(stream, replay_capacity=2000)
    stream_through(a, stream, 3000, examples_of)
    a.refresh_ewc()
    arrays, meta = from_bytes(to_bytes(*learner_state(a)))
    b = make_learner(stream, replay_capacity=2000)
    restore_learner(b, arrays, meta)
    batch = stream.take(700)
    a.learn(examples_of(a, batch))
    b.learn(examples_of(b, batch))
    for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.seq == b.seq and a.epoch == b.epoch


def test_a_retrain_trains_a_fresh_network_on_the_rows_not_held_out(
    make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    stream = SEAStream(seed=8)
    learner = make_learner(stream)
    history = examples_of(learner, stream.take(4000))
    learner.observe(history)
    assert learner.trained == 0
    learner.retrain_on(history, passes=3)
    held = holdout_mask(history.key, learner.options.holdout_fraction)
    assert learner.trained == 3 * int((~held).sum())
    assert learner.score(examples_of(learner, stream.take(1000))) > 0.9


PLUGIN = """
import torch
from torch import nn

class Wide(nn.Module):
    def __init__(self, width, outputs):
        super().__init__()
        self.a = nn.Linear(width, 24)
        self.b = nn.Linear(width + 24, outputs)

    def forward(self, x):
        return self.b(torch.cat([x, torch.tanh(self.a(x))], dim=1))

def build(ctx):
    return Wide(ctx.input_width, ctx.outputs)

def wrong(ctx):
    return nn.Linear(ctx.input_width, 7)

def not_a_module(ctx):
    return "hello"
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"driftline_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_plugin_learner(
    plugin_module: str, make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    stream = CovariateShiftStream(seed=6)
    learner = make_learner(stream, {"type": "plugin", "entrypoint": f"{plugin_module}:build"})
    assert type(learner.net.body).__name__ == "Wide"
    for _ in range(8):
        learner.learn(examples_of(learner, stream.take(500)))
    assert learner.score(examples_of(learner, stream.take(1000))) > 0.85


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("wrong", r"returns shape \[2, 7\]"),
        ("not_a_module", "must return a torch.nn.Module"),
        ("absent", "cannot be loaded"),
    ],
)
def test_plugin_errors_say_what_to_fix(
    plugin_module: str, function: str, message: str, make_learner: LearnerFactory
) -> None:
    with pytest.raises(LearnerError, match=message):
        make_learner(SEAStream(), {"type": "plugin", "entrypoint": f"{plugin_module}:{function}"})
