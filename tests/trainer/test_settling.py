"""A young epoch gets extra steps, tapering off; inputs far from the fitted range saturate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from driftline.common.streams import SEAStream
from driftline.trainer.examples import Examples, holdout_mask
from driftline.trainer.learner import OnlineLearner
from driftline.trainer.nets import INPUT_CLIP, Preprocess, build_net

from .conftest import model_spec

LearnerFactory = Callable[..., OnlineLearner]
ExamplesOf = Callable[..., Examples]


def counting_steps(learner: OnlineLearner, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one per gradient step the learner takes."""
    steps: list[int] = []
    original = learner._gradient_step

    def step(*args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(1)
        original(*args, **kwargs)

    monkeypatch.setattr(learner, "_gradient_step", step)
    return steps


def test_settling_steps_taper_over_the_epoch(make_learner: LearnerFactory) -> None:
    learner = make_learner(SEAStream(seed=1), batch_size=64, settle_rows=1000, settle_rehearsals=4)
    assert learner._settling_steps(64) == 4  # age 0: the whole budget per batch
    assert learner._settling_steps(256) == 16  # per batch of rows learned
    learner.seq = 500
    assert learner._settling_steps(64) == 2  # half way: half
    learner.seq = 1000
    assert learner._settling_steps(64) == 0  # settled
    learner.open_epoch("test")  # a new epoch is young again, but the drift boost runs
    assert learner.boost_left > 0 and learner._settling_steps(64) == 0
    learner.boost_left = 0
    assert learner._settling_steps(64) == 4


def test_settling_off(make_learner: LearnerFactory) -> None:
    assert make_learner(SEAStream(seed=1), settle_rehearsals=0)._settling_steps(64) == 0
    assert make_learner(SEAStream(seed=1), settle_rows=0)._settling_steps(64) == 0


def test_a_young_epoch_learns_with_extra_steps(
    make_learner: LearnerFactory, examples_of: ExamplesOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = SEAStream(seed=1)
    taken: dict[int, int] = {}
    for rehearsals in (0, 3):
        learner = make_learner(
            stream,
            batch_size=64,
            replay_fraction=0.0,
            holdout_fraction=0.0,
            detect_concept=False,
            settle_rows=1_000_000,
            settle_rehearsals=rehearsals,
        )
        steps = counting_steps(learner, monkeypatch)
        learner.learn(examples_of(learner, SEAStream(seed=1).take(256)))
        taken[rehearsals] = len(steps)
    assert taken[0] == 4  # 256 rows in batches of 64
    assert taken[3] == 4 + 3 * 4  # and 3 extra per batch of rows, on the replay rows


def test_a_settled_epoch_takes_no_extra_steps(
    make_learner: LearnerFactory, examples_of: ExamplesOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = SEAStream(seed=1)
    learner = make_learner(
        stream, batch_size=64, replay_fraction=0.0, holdout_fraction=0.0, settle_rows=256
    )
    learner.learn(examples_of(learner, stream.take(256)))
    steps = counting_steps(learner, monkeypatch)
    learner.learn(examples_of(learner, stream.take(256)))
    assert len(steps) == 4


def test_inputs_far_from_the_fitted_range_saturate() -> None:
    pre = Preprocess(2, (), clip=INPUT_CLIP)
    pre.fit(np.random.default_rng(0).normal(0.0, 1.0, (1000, 2)).astype(np.float32))
    numeric = torch.tensor([[1000.0, float("nan")], [-1000.0, 0.5]])
    z = pre(numeric, torch.zeros(2, 0, dtype=torch.int64))
    assert z[0, 0] == pytest.approx(INPUT_CLIP)
    assert z[1, 0] == pytest.approx(-INPUT_CLIP)
    assert z[0, 1] == 0.0  # missing: the mean, as before
    assert abs(float(z[1, 1])) < 1.0  # values near the data: unchanged
    assert bool(Preprocess(2, ())(numeric, torch.zeros(2, 0, dtype=torch.int64))[0, 0] > 100)


def test_built_in_nets_saturate_their_inputs() -> None:
    net = build_net(model_spec(), SEAStream(seed=1).contract())
    assert isinstance(net.preprocess, Preprocess) and net.preprocess.clip == INPUT_CLIP


def test_the_exported_graph_saturates_as_torch_does(
    make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    from driftline.trainer import export

    stream = SEAStream(seed=2)
    learner = make_learner(stream)
    learner.fit_offline(examples_of(learner, stream.take(1000)), passes=1)
    rows = examples_of(learner, stream.take(6))
    rows.numeric[:2, 0] = 1e6  # far beyond the fitted range
    rows.numeric[2:4, 1] = -1e6
    rows.numeric[4:, 2] = np.nan  # missing: filled before the clip, in ONNX too
    graph = export.export_onnx(learner.net, learner.layout, "classification", 2)
    predicted = learner.predict(rows.numeric, rows.codes)
    assert export.parity(graph, predicted, rows, learner.layout, "classification") <= 1e-5


def test_a_young_epochs_ewc_anchor_pulls_in_proportion_to_its_age(
    make_learner: LearnerFactory, examples_of: ExamplesOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full-strength anchor taken while the epoch is still being learned would hold the
    network near where it stood after its first rows (the replay rows hold them anyway)."""
    rows = SEAStream(seed=1).take(500)
    fishers = {}
    for settle in (0, 1000):
        learner = make_learner(
            SEAStream(seed=1), settle_rows=settle, settle_rehearsals=0, detect_concept=False
        )
        learner.learn(examples_of(learner, rows))
        learner.refresh_ewc()
        assert learner.ewc.fisher is not None
        fishers[settle] = learner.ewc.fisher
    for full, young in zip(fishers[0], fishers[1000], strict=True):
        torch.testing.assert_close(young, full * 0.5)  # 500 of 1,000 rows: half the pull
    factors: list[float] = []
    monkeypatch.setattr(learner.ewc, "weaken", factors.append)
    learner.learn(examples_of(learner, SEAStream(seed=1).take(600)))
    learner.refresh_ewc()
    assert factors == []  # 1,100 rows: settled, full strength
    learner.open_epoch("test", from_seq=learner.seq - 100)
    learner.refresh_ewc()
    assert factors == [0.1]  # a new epoch is young again: 100 rows old


def test_a_fresh_network_gets_one_step_per_learning_rate_unit(
    make_learner: LearnerFactory, examples_of: ExamplesOf
) -> None:
    """Adam moves a weight by about the learning rate per step: a fresh network's offline
    fit gets up to 1 / learning_rate steps (within twice the passes asked); a trained one
    keeps `min_offline_steps`."""
    stream = SEAStream(seed=1)
    learner = make_learner(stream, batch_size=64, learning_rate=1e-2, min_offline_steps=25)
    ex = examples_of(learner, stream.take(640))  # 10 steps a pass
    assert learner.fresh
    learner.fit_offline(ex, passes=2)
    assert not learner.fresh
    assert learner.trained == 640 * 4  # 100 steps wanted: capped at twice the passes
    learner.fit_offline(ex, passes=2)
    assert learner.trained == 640 * 4 + 640 * 3  # trained: 25 steps, 3 passes
    learner.retrain_on(ex, passes=2)
    kept = int((~holdout_mask(ex.key, learner.options.holdout_fraction)).sum())
    assert learner.trained == 640 * 7 + kept * 4  # a fresh network again: 4 passes, not 3
    assert not learner.fresh
