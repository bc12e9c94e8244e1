"""Reservoir and ring buffers: uniform samples, epochs that retire rows, exact state."""

from __future__ import annotations

import numpy as np

from driftline.trainer.buffers import EMPTY, Reservoir, Ring
from driftline.trainer.examples import Examples


def rows(start: int, n: int, m: int = 1) -> Examples:
    idx = np.arange(start, start + n)
    return Examples(
        numeric=idx[:, None].astype(np.float32),
        categorical=np.array([[f"c{i}"] * m for i in idx], dtype=object).reshape(n, m),
        codes=(idx[:, None] % 5).repeat(m, axis=1).astype(np.int64),
        labels=(idx % 2).astype(np.float32),
        key=idx.astype(np.int64),
        served=np.full(n, np.nan, np.float32),
        ts=idx.astype(np.float64),
        weight=np.ones(n, np.float32),
    )


def test_reservoir_keeps_a_uniform_sample() -> None:
    rng = np.random.default_rng(0)
    counts = np.zeros(10, int)
    for trial in range(200):
        r = Reservoir(100, 1, 1)
        for start in range(0, 1000, 37):
            n = min(37, 1000 - start)
            r.add(rows(start, n), np.arange(start, start + n), rng)
        kept = r.seq[r.current_slots()]
        counts += np.bincount(kept // 100, minlength=10)
        assert len(kept) == 100 and len(set(kept.tolist())) == 100, trial
    share = counts / counts.sum()
    assert np.all(np.abs(share - 0.1) < 0.02), share


def test_new_epoch_retires_old_rows_and_reuses_their_slots_first() -> None:
    rng = np.random.default_rng(1)
    r = Reservoir(50, 1, 1)
    r.add(rows(0, 200), np.arange(200), rng)
    late = int(np.count_nonzero(r.seq[r.epoch == 0] >= 190))
    r.open_epoch(1, from_seq=190)  # the rows from 190 on arrived after the change began
    assert r.count(1) == late and r.count(0) == 50 - late
    idx, weights = r.sample(1000, rng)
    assert weights is None and set(r.seq[idx].tolist()) <= set(range(190, 200))
    idx, weights = r.sample(1000, rng, old_weight=0.25)
    assert weights is not None and set(weights.tolist()) == {1.0, 0.25}
    r.add(rows(200, 40), np.arange(200, 240), rng)
    assert r.count(1) == late + 40 and r.count(0) == 10 - late  # retired slots went first
    # Anchor sets are cleared outright.
    anchors = Reservoir(20, 1, 1, keep_raw=True)
    anchors.add(rows(0, 20), np.arange(20), rng)
    anchors.open_epoch(1, clear=True)
    assert len(anchors) == 0 and (anchors.epoch == EMPTY).all()


def test_ring_keeps_the_latest_rows_per_epoch() -> None:
    ring = Ring(10, 1, 1)
    ring.append(rows(0, 7), np.arange(7), 0)
    ring.append(rows(7, 8), np.arange(7, 15), 0)
    assert ring.seq[ring.latest(0)].tolist() == list(range(5, 15))
    assert ring.retag(12, 1) == 3
    assert ring.seq[ring.latest(1)].tolist() == [12, 13, 14]
    assert ring.rows(ring.latest(1)).categorical[:, 0].tolist() == ["c12", "c13", "c14"]


def test_state_round_trip_keeps_rows_and_order() -> None:
    rng = np.random.default_rng(2)
    ring, res = Ring(10, 1, 1), Reservoir(10, 1, 1)
    ring.append(rows(0, 13), np.arange(13), 0)
    res.add(rows(0, 30), np.arange(30), rng)
    ring2, res2 = Ring(10, 1, 1), Reservoir(10, 1, 1)
    ring2.load_state("r", {k: np.array(v) for k, v in ring.state("r").items()})
    res2.load_state("s", {k: np.array(v) for k, v in res.state("s").items()})
    assert ring2.seq[ring2.latest(0)].tolist() == ring.seq[ring.latest(0)].tolist()
    ring2.append(rows(13, 1), np.array([13]), 0)  # overwrites the oldest row, as before
    assert ring2.seq[ring2.latest(0)].tolist() == list(range(4, 14))
    assert sorted(res2.seq[res2.current_slots()].tolist()) == sorted(res.seq.tolist())
    assert res2.seen == 30
    # A half-full ring appends after its rows, not over them.
    half = Ring(10, 1, 1)
    half.append(rows(0, 4), np.arange(4), 0)
    again = Ring(10, 1, 1)
    again.load_state("h", dict(half.state("h")))
    again.append(rows(4, 2), np.arange(4, 6), 0)
    assert again.seq[again.latest(0)].tolist() == list(range(6))
