"""Ranks that share gradient steps end with one learner: the one a single process gets."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np

from driftline.common.streams import AgrawalStream
from driftline.trainer.checkpoint import from_bytes, learner_state, to_bytes
from driftline.trainer.distributed import Ranks, free_port, pack, unpack
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from tests.trainer.conftest import model_spec, to_examples

ROWS, BLOCK = 3000, 500


def _learner() -> OnlineLearner:
    stream = AgrawalStream(seed=3)
    return OnlineLearner(
        model_spec("classification", {"type": "mlp", "hidden": [16]}),
        stream.contract(),
        LearnerOptions(batch_size=64, learning_rate=1e-2, seed=0, boost_rows=500),
    )


def _stream_through(learner: OnlineLearner) -> bytes:
    """A concept switch half-way, and a drift signal for it: an epoch with its catch-up
    passes, a boost with its rehearsals, then an EWC anchor."""
    stream = AgrawalStream(seed=3)
    for block in range(ROWS // BLOCK):
        if block == (ROWS // BLOCK) // 2:
            stream.switch_to(4)
        if block == (ROWS // BLOCK) // 2 + 1:
            learner.open_epoch("drift event", learner.seq - BLOCK)
        rows = stream.take(BLOCK)
        served = np.zeros(len(rows), np.float32)  # a stable version that says 0 everywhere
        learner.learn(to_examples(learner, rows, served))
    learner.refresh_ewc()
    arrays, meta = learner_state(learner)
    return to_bytes(arrays, meta)


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    learner = _learner()
    learner.shard = Ranks(rank, world)
    Path(out).write_bytes(_stream_through(learner))
    dist.destroy_process_group()


def test_two_ranks_learn_what_one_process_learns(tmp_path: Path) -> None:
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"rank{r}.npz") for r in range(2)]
    procs = [ctx.Process(target=_rank, args=(r, 2, port, outs[r])) for r in range(2)]
    for p in procs:
        p.start()
    single = from_bytes(_stream_through(_learner()))
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ranks = [from_bytes(Path(o).read_bytes()) for o in outs]
    (a0, m0), (a1, m1) = ranks
    # The ranks agree exactly: every decision, every weight, every buffer.
    for m in (m0, m1):
        for e in m["epochs"]:
            e.pop("at")
    assert m0 == m1
    assert a0.keys() == a1.keys()
    for name in a0:
        if name.endswith(".ts"):  # arrival times: each rank built its rows here itself
            continue
        np.testing.assert_array_equal(a0[name], a1[name], err_msg=name)
    # And they learned what one process learns from the same rows (the sums differ
    # only in the order of additions).
    a, m = single
    for e in m["epochs"]:
        e.pop("at")
    assert len(m["epochs"]) > 1  # the concept switch opened an epoch
    assert m0["epochs"] == m["epochs"]
    assert (m0["seq"], m0["trained"], m0["epoch"]) == (m["seq"], m["trained"], m["epoch"])
    for name in a:
        if name.startswith("net."):
            np.testing.assert_allclose(a0[name], a[name], rtol=1e-3, atol=1e-4, err_msg=name)


def test_rows_travel_whole() -> None:
    learner = _learner()
    ex = to_examples(learner, AgrawalStream(seed=1).take(50), np.ones(50, np.float32))
    partitions, offsets = np.arange(50) % 3, np.arange(50)
    meta: dict[str, Any] = {"stop": False, "positions": {"labeled:0": 7}}
    got, parts, offs, back = unpack(pack(ex, partitions, offsets, meta), ex.categorical.shape[1])
    for name in ("numeric", "codes", "labels", "key", "served", "ts", "categorical"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ex, name), err_msg=name)
    np.testing.assert_array_equal(parts, partitions)
    np.testing.assert_array_equal(offs, offsets)
    assert back == meta
