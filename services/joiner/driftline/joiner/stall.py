"""Telling a stalled consumer from an idle one.

A consumer that holds partitions with records it has not read, and has not moved on
any of them for a while, is stuck: in the Kafka client (a fetcher that a rebalance
left stopped) or in the group. Nothing else would notice: the process is alive,
`consume` returns empty, and the consumer lag only grows. The joiner checks every
few seconds and, when a partition has stood still behind its end for
`stall_seconds`, starts its consumer afresh (see `JoinerWorker._restart_consumer`).

`StallWatch` is the decision alone, on offsets it is given: the worker reads them
from the consumer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Partition = tuple[str, int]


@dataclass
class StallWatch:
    """Remembers since when each assigned partition has stood at its offset."""

    stall_seconds: float
    _since: dict[Partition, tuple[int, float]] = field(default_factory=dict)

    def stalled(
        self, positions: Mapping[Partition, int], ends: Mapping[Partition, int], now: float
    ) -> dict[Partition, tuple[int, int]]:
        """The partitions behind their end (`positions[p] < ends[p]`) that have not
        moved for `stall_seconds`, as {partition: (position, end)}.

        `positions` are where the consumer will read next (its committed offset when
        it has read nothing yet), `ends` a lower bound of each partition's end. A
        partition that moved, caught up, or left the assignment starts its clock again.
        """
        for gone in self._since.keys() - positions.keys():
            del self._since[gone]
        stuck: dict[Partition, tuple[int, int]] = {}
        for part, position in positions.items():
            end = ends.get(part, 0)
            if position >= end:
                self._since.pop(part, None)
                continue
            seen, since = self._since.get(part, (None, now))
            if seen != position:
                self._since[part] = (position, now)
            elif now - since >= self.stall_seconds:
                stuck[part] = (position, end)
        return stuck

    def reset(self) -> None:
        self._since.clear()
