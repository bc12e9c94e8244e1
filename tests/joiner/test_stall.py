"""When the joiner calls its consumer stuck: a partition behind its end that has not
moved for `stall_seconds`; never one that moves, has caught up, or was just assigned."""

from __future__ import annotations

from driftline.joiner.stall import StallWatch

P, Q = ("t.predictions", 0), ("t.outcomes", 1)


def test_a_partition_standing_still_behind_its_end_is_stuck_after_the_delay() -> None:
    watch = StallWatch(stall_seconds=30)
    assert watch.stalled({P: 10}, {P: 50}, now=0) == {}
    assert watch.stalled({P: 10}, {P: 60}, now=29) == {}
    assert watch.stalled({P: 10}, {P: 60}, now=30) == {P: (10, 60)}


def test_moving_or_caught_up_partitions_start_their_clock_again() -> None:
    watch = StallWatch(stall_seconds=30)
    watch.stalled({P: 10, Q: 5}, {P: 50, Q: 9}, now=0)
    # P moved, Q caught up with its end.
    assert watch.stalled({P: 11, Q: 9}, {P: 50, Q: 9}, now=20) == {}
    assert watch.stalled({P: 11, Q: 9}, {P: 50, Q: 9}, now=40) == {}
    assert watch.stalled({P: 11, Q: 9}, {P: 50, Q: 12}, now=50) == {P: (11, 50)}
    # Q fell behind at 50: its clock starts then.
    assert watch.stalled({P: 11, Q: 9}, {P: 50, Q: 12}, now=79) == {P: (11, 50)}
    assert watch.stalled({P: 11, Q: 9}, {P: 50, Q: 12}, now=80) == {P: (11, 50), Q: (9, 12)}


def test_a_partition_that_left_and_came_back_starts_afresh() -> None:
    watch = StallWatch(stall_seconds=30)
    watch.stalled({P: 10}, {P: 50}, now=0)
    assert watch.stalled({}, {}, now=20) == {}
    assert watch.stalled({P: 10}, {P: 50}, now=40) == {}
    assert watch.stalled({P: 10}, {P: 50}, now=70) == {P: (10, 50)}
    watch.reset()
    assert watch.stalled({P: 10}, {P: 50}, now=71) == {}
