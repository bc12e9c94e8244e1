"""Actions: what the state machine asks the driver to do, as data.

The machine returns actions instead of doing anything, so its tests read them and
the driver (or the operator) carries them out. Each action is idempotent: carried
out twice, it has the effect of once, which lets the driver retry one that failed
and replay a tick after a crash.
"""

from __future__ import annotations

import msgspec

from driftline.api.events import RolloutEvent
from driftline.api.routing import Mode, RoutingTable


class SetRouting(msgspec.Struct, frozen=True, kw_only=True, tag="set_routing"):
    """Serve this table. The driver stamps the revision (it only moves forward)."""

    stable: str | None
    candidate: str | None = None
    baseline: str | None = None
    mode: Mode = "stable"
    weight: int = 0

    def table(self, revision: int, updated_at: float) -> RoutingTable:
        return RoutingTable(
            stable=self.stable,
            candidate=self.candidate,
            baseline=self.baseline,
            mode=self.mode,
            weight=self.weight,
            revision=revision,
            updated_at=updated_at,
        )

    def same_as(self, table: RoutingTable | None) -> bool:
        return table is not None and (
            table.stable,
            table.candidate,
            table.baseline,
            table.mode,
            table.weight,
        ) == (self.stable, self.candidate, self.baseline, self.mode, self.weight)


class SetAlias(msgspec.Struct, frozen=True, kw_only=True, tag="set_alias"):
    """Point a registry alias at a version."""

    alias: str
    version: str


class DeleteAlias(msgspec.Struct, frozen=True, kw_only=True, tag="delete_alias"):
    """Remove an alias, but only while it still names `version` (a newer candidate
    registered meanwhile keeps its alias)."""

    alias: str
    version: str


class EmitEvent(msgspec.Struct, frozen=True, kw_only=True, tag="emit_event"):
    """Publish a transition on the model's control topic."""

    event: RolloutEvent


Action = SetRouting | SetAlias | DeleteAlias | EmitEvent
