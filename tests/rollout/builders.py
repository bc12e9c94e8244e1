"""Builders for the state machine's tests: policies, evidence, and a small world.

`World` plays what the driver does around the pure machine: it keeps cumulative
counters, the registry's aliases and the routing table, and applies the machine's
actions to them, so tests read like a rollout seen from outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftline.api.artifacts import ALIAS_BASELINE, ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.common.redis_state import LATENCY_BUCKETS_MS, AccuracyEstimate, latency_bucket
from driftline.rollout import (
    Command,
    Decision,
    DeleteAlias,
    DriftSignal,
    EmitEvent,
    Evidence,
    Policy,
    RegistryView,
    RolloutState,
    SegmentEvidence,
    SetAlias,
    SetRouting,
    Snapshot,
    VersionCounters,
    step,
)
from driftline.rollout.guard import GuardEvidence


def policy(**overrides: Any) -> Policy:
    base: dict[str, Any] = {
        "model": "m",
        "strategy": "shadow-then-canary",
        "steps": (50, 100),
        "step_seconds": 10.0,
        "shadow_min_samples": 20,
        "max_disagreement": 0.1,
        "min_labeled": 20,
        "max_quality_drop": 0.02,
        "max_p99_ms": 50.0,
        "max_error_rate": 0.05,
        "max_inconclusive_seconds": 60.0,
    }
    return Policy(**{**base, **overrides})


def latency(n: int, ms: float = 3.0) -> tuple[int, ...]:
    counts = [0] * len(LATENCY_BUCKETS_MS)
    counts[latency_bucket(ms)] = n
    return tuple(counts)


def served(
    labeled: int,
    accuracy: float = 0.9,
    *,
    requests: int | None = None,
    errors: int = 0,
    ms: float = 3.0,
) -> VersionCounters:
    """Counters of a version that served `requests` (default: one per labeled sample)."""
    n = labeled if requests is None else requests
    return VersionCounters(
        labeled=labeled,
        correct=accuracy * labeled,
        abs_error=(1 - accuracy) * labeled,
        requests=n,
        errors=errors,
        latency=latency(n, ms),
    )


def evidence(
    labeled: int,
    accuracy: float = 0.9,
    stable_accuracy: float = 0.9,
    *,
    stable_labeled: int | None = None,
    agreement: float = 1.0,
    errors: int = 0,
    ms: float = 3.0,
) -> Evidence:
    return Evidence(
        candidate=served(labeled, accuracy, errors=errors, ms=ms),
        stable=served(labeled if stable_labeled is None else stable_labeled, stable_accuracy),
        compared=labeled,
        agreed=round(agreement * labeled),
    )


@dataclass
class World:
    """Registry, routing and cumulative counters around one machine."""

    policy: Policy = field(default_factory=policy)
    state: RolloutState = field(default_factory=RolloutState)
    now: float = 1000.0
    aliases: dict[str, str] = field(default_factory=lambda: {ALIAS_CHAMPION: "1"})
    routing: SetRouting | None = None
    counters: Evidence = field(default_factory=Evidence)
    events: list[EmitEvent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def view(self) -> RegistryView:
        return RegistryView(
            champion=self.aliases.get(ALIAS_CHAMPION),
            candidate=self.aliases.get(ALIAS_CANDIDATE),
            baseline=self.aliases.get(ALIAS_BASELINE),
        )

    def add(self, more: Evidence) -> None:
        self.counters = Evidence(
            candidate=self.counters.candidate.plus(more.candidate),
            stable=self.counters.stable.plus(more.stable),
            compared=self.counters.compared + more.compared,
            agreed=self.counters.agreed + more.agreed,
            segments={
                key: SegmentEvidence(
                    candidate=self.counters.segments.get(key, SegmentEvidence()).candidate.plus(
                        more.segments.get(key, SegmentEvidence()).candidate
                    ),
                    stable=self.counters.segments.get(key, SegmentEvidence()).stable.plus(
                        more.segments.get(key, SegmentEvidence()).stable
                    ),
                )
                for key in self.counters.segments.keys() | more.segments.keys()
            },
        )

    def tick(
        self,
        advance: float = 0.0,
        *,
        metrics_error: str | None = None,
        registry_down: bool = False,
        drift: DriftSignal | None = None,
        command: Command | None = None,
        guard: GuardEvidence | None = None,
        estimates: dict[str, AccuracyEstimate] | None = None,
    ) -> Decision:
        self.now += advance
        snapshot = Snapshot(
            registry=None if registry_down else self.view(),
            evidence=None if metrics_error or not self.state.active else self.counters,
            metrics_error=metrics_error,
            drift=drift,
            command=command,
            guard=guard,
            estimates=estimates or {},
        )
        decision = step(self.state, snapshot, self.policy, self.now)
        if decision.state.started_at != self.state.started_at:
            self.counters = Evidence()  # the driver reads counters from the rollout's start
        self.state = decision.state
        for action in decision.actions:
            if isinstance(action, SetRouting):
                self.routing = action
            elif isinstance(action, SetAlias):
                self.aliases[action.alias] = action.version
            elif isinstance(action, DeleteAlias):
                if self.aliases.get(action.alias) == action.version:
                    del self.aliases[action.alias]
            else:
                self.events.append(action)
        self.decisions.append(decision)
        return decision

    def propose(self, version: str) -> Decision:
        """The trainer moves the candidate alias; the next tick sees it."""
        self.aliases[ALIAS_CANDIDATE] = version
        return self.tick()
