"""The routing table: which model versions a serving pod uses, and how.

Written by the rollout controller (to Redis and to the DynamicModel status), read
by every inference pod within a second. `revision` only moves forward, so a pod
never goes back to an older table it sees late.

Canary assignment is a consistent hash of the sticky key: an entity whose hash
falls under the weight sees the candidate. The hash does not depend on the weight,
so an entity on the candidate at 5 % stays there at 20 %, and one entity sees one
version for the whole of a step.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

Mode = Literal["stable", "shadow", "canary"]
"""stable: candidate unused; shadow: candidate scored off the critical path, never
returned; canary: `weight` percent of entities are served by the candidate."""

HASH_SPACE = 10_000


class RoutingTable(msgspec.Struct, kw_only=True, frozen=True):
    stable: str | None
    candidate: str | None = None
    baseline: str | None = None
    mode: Mode = "stable"
    weight: int = 0
    revision: int = 0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100:
            raise ValueError(f"weight {self.weight} must be within 0..100")
        if self.mode != "stable" and self.candidate is None:
            raise ValueError(f"mode {self.mode!r} needs a candidate version")

    def versions(self) -> set[str]:
        """Every version a pod must hold to serve this table."""
        return {v for v in (self.stable, self.candidate, self.baseline) if v is not None}


def sticky_bucket(key: str) -> int:
    """The entity's fixed place in 0..HASH_SPACE-1 (the same in every process)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HASH_SPACE


def serves_candidate(table: RoutingTable, sticky_key: str | None) -> bool:
    """True when this request is answered by the candidate under `table`."""
    if table.mode != "canary" or table.candidate is None or table.weight <= 0:
        return False
    if table.weight >= 100:
        return True
    if sticky_key is None:
        return False  # no key, no stickiness: stay on stable
    return sticky_bucket(sticky_key) < table.weight * HASH_SPACE // 100


def encode_table(table: RoutingTable) -> bytes:
    return msgspec.json.encode(table)


def decode_table(data: bytes | str) -> RoutingTable:
    return msgspec.json.decode(data, type=RoutingTable)
