"""Readiness shared by the worker processes of one server.

With `workers > 1` the kubelet's readiness probe reaches one worker, and any request
after it may reach another. Each worker loads its models on its own, so one worker
being ready says nothing about its siblings. The supervisor allocates one flag per
worker in shared memory before it forks; each worker keeps its own flag current,
and answers ready only when every flag is set. A pod is then ready when every worker
can serve, and stops being ready as soon as one cannot.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import MutableSequence


class SharedReadiness:
    """One worker's view of its siblings' readiness: flag `index` of `flags` is its own."""

    def __init__(self, flags: MutableSequence[int], index: int) -> None:
        if not 0 <= index < len(flags):
            raise ValueError(f"worker index {index} is outside 0..{len(flags) - 1}")
        self._flags = flags
        self.index = index

    @classmethod
    def allocate(cls, workers: int) -> MutableSequence[int]:
        """The flags, in memory that forked workers share (all clear)."""
        flags: MutableSequence[int] = multiprocessing.get_context("fork").RawArray("b", workers)
        return flags

    def publish(self, ready: bool) -> None:
        self._flags[self.index] = 1 if ready else 0

    def not_ready(self) -> list[int]:
        """The workers that are not ready, by index (empty when all are)."""
        return [i for i, flag in enumerate(self._flags) if not flag]
