"""Where the trainer stands in its streams and its lineage, kept with every checkpoint.

- `positions`: the next offset to read per `topic:partition` (labeled and control
  topics). After a restart these win over the consumer group's committed offsets,
  which may lag behind the checkpoint by one commit.
- `lineage`: the first and last offset per partition of the labeled records
  learned since the parent version: the `driftline.offsets` tag of the next one.
- `parent`, `staged_key`: the last registered version, and a staged version not
  yet registered (completed on restart).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass
class Progress:
    positions: dict[str, int] = field(default_factory=dict)
    lineage: dict[str, list[int]] = field(default_factory=dict)
    parent: str | None = None
    staged_key: str | None = None
    rows_since_attempt: int = 0
    stable_version: str | None = None
    seen_events: deque[str] = field(default_factory=lambda: deque(maxlen=256))
    gate_history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))

    def advance(self, topic: str, partition: int, offset: int) -> None:
        """Record `offset` as handled: the next read starts after it."""
        key = f"{topic}:{partition}"
        self.positions[key] = max(self.positions.get(key, 0), offset + 1)

    def learned(
        self, topic: str, partitions: NDArray[np.int64], offsets: NDArray[np.int64]
    ) -> None:
        """Widen the lineage ranges to cover these learned records."""
        for partition in np.unique(partitions):
            mine = offsets[partitions == partition]
            low, high = int(mine.min()), int(mine.max())
            span = self.lineage.setdefault(f"{topic}:{partition}", [low, high])
            span[0], span[1] = min(span[0], low), max(span[1], high)

    def to_meta(self) -> dict[str, Any]:
        return {
            "positions": self.positions,
            "lineage": self.lineage,
            "parent": self.parent,
            "staged_key": self.staged_key,
            "rows_since_attempt": self.rows_since_attempt,
            "stable_version": self.stable_version,
            "seen_events": list(self.seen_events),
            "gate_history": list(self.gate_history),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Progress:
        progress = cls(
            positions={k: int(v) for k, v in meta["positions"].items()},
            lineage={k: [int(a), int(b)] for k, (a, b) in meta["lineage"].items()},
            parent=meta["parent"],
            staged_key=meta["staged_key"],
            rows_since_attempt=int(meta["rows_since_attempt"]),
            stable_version=meta.get("stable_version"),
        )
        progress.seen_events.extend(meta.get("seen_events", []))
        progress.gate_history.extend(meta.get("gate_history", []))
        return progress

    def commit_offsets(self, assigned: set[tuple[str, int]]) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) for the partitions this consumer holds."""
        out = []
        for key, position in self.positions.items():
            topic, partition = key.rsplit(":", 1)
            if (topic, int(partition)) in assigned:
                out.append((topic, int(partition), position))
        return out
