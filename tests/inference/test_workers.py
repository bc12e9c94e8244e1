"""The worker processes' shared readiness flags."""

from __future__ import annotations

import multiprocessing

import pytest

from driftline.inference.workers import SharedReadiness


def _publish(flags: object, index: int) -> None:
    SharedReadiness(flags, index).publish(True)  # type: ignore[arg-type]


def test_flags_start_clear_and_each_worker_sets_its_own() -> None:
    flags = SharedReadiness.allocate(3)
    first, last = SharedReadiness(flags, 0), SharedReadiness(flags, 2)
    assert first.not_ready() == [0, 1, 2]
    first.publish(True)
    last.publish(True)
    assert last.not_ready() == [1]
    first.publish(False)
    assert last.not_ready() == [0, 1]


def test_a_forked_worker_s_flag_is_seen_by_the_others() -> None:
    flags = SharedReadiness.allocate(2)
    child = multiprocessing.get_context("fork").Process(target=_publish, args=(flags, 1))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert SharedReadiness(flags, 0).not_ready() == [0]


@pytest.mark.parametrize("index", [-1, 2])
def test_an_index_outside_the_flags_is_refused(index: int) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        SharedReadiness(SharedReadiness.allocate(2), index)
