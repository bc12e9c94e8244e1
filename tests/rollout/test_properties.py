"""Properties of the rollout machine over random metric sequences (hypothesis).

The test keeps its own ledger of what truly arrived in each stage (plain sums of
what it fed, not the machine's arithmetic), and checks at every advance that the
stage had enough passing evidence. After every tick it checks that the routing
table the machine asked for is consistent with where the rollout stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.rollout import (
    Command,
    Decision,
    DriftSignal,
    Evidence,
    Policy,
    SetRouting,
    VersionCounters,
    routing_for,
)
from tests.rollout.builders import World, latency, policy

MS_CHOICES = (3.0, 40.0, 120.0)  # under, near and over the 50 ms limit


@dataclass
class Feed:
    """One batch of traffic between two ticks, as the joiner and inference count it."""

    labeled: int
    correct: int
    stable_labeled: int
    stable_correct: int
    requests: int
    errors: int
    ms: float
    compared: int
    agreed: int

    def evidence(self) -> Evidence:
        return Evidence(
            candidate=VersionCounters(
                labeled=self.labeled,
                correct=self.correct,
                abs_error=self.labeled - self.correct,
                requests=self.requests,
                errors=self.errors,
                latency=latency(self.requests, self.ms),
            ),
            stable=VersionCounters(
                labeled=self.stable_labeled,
                correct=self.stable_correct,
                abs_error=self.stable_labeled - self.stable_correct,
            ),
            compared=self.compared,
            agreed=self.agreed,
        )


@st.composite
def any_feed(draw: st.DrawFn) -> Feed:
    """Any traffic: qualities, errors and latencies drawn at random."""
    labeled = draw(st.integers(0, 30))
    stable_labeled = draw(st.integers(0, 30))
    compared = draw(st.integers(0, 30))
    requests = labeled + draw(st.integers(0, 5))
    return Feed(
        labeled=labeled,
        correct=draw(st.integers(0, labeled)),
        stable_labeled=stable_labeled,
        stable_correct=draw(st.integers(0, stable_labeled)),
        requests=requests,
        errors=draw(st.integers(0, min(requests, 2))),
        ms=draw(st.sampled_from(MS_CHOICES)),
        compared=compared,
        agreed=draw(st.integers(max(0, compared - 3), compared)),
    )


@st.composite
def healthy_feed(draw: st.DrawFn) -> Feed:
    """Traffic of a candidate about as good as stable, close to the thresholds."""
    labeled = draw(st.integers(0, 30))
    stable_labeled = draw(st.integers(0, 30))
    accuracy = draw(st.sampled_from([0.9, 0.95, 1.0, 0.85] if draw(st.booleans()) else [0.9, 1.0]))
    return Feed(
        labeled=labeled,
        correct=round(accuracy * labeled),
        stable_labeled=stable_labeled,
        stable_correct=round(0.9 * stable_labeled),
        requests=labeled,
        errors=draw(st.sampled_from([0] * 19 + [1])) if labeled else 0,
        ms=draw(st.sampled_from([3.0] * 9 + [40.0])),
        compared=labeled,
        agreed=labeled - draw(st.sampled_from([0] * 9 + [1])) if labeled else 0,
    )


def traffic(max_size: int) -> st.SearchStrategy[list[tuple[Feed, float]]]:
    """A run of (feed, seconds until the next tick): healthy, random, or a mix."""

    def run(feed: st.SearchStrategy[Feed]) -> st.SearchStrategy[list[tuple[Feed, float]]]:
        return st.lists(st.tuples(feed, st.floats(0, 6)), min_size=1, max_size=max_size)

    return st.one_of(
        run(healthy_feed()), run(any_feed()), run(st.one_of(healthy_feed(), any_feed()))
    )


@dataclass
class Ledger:
    """What truly arrived during the current stage, summed by the test itself."""

    labeled: int = 0
    correct: int = 0
    stable_labeled: int = 0
    stable_correct: int = 0
    requests: int = 0
    errors: int = 0
    by_ms: dict[float, int] = field(default_factory=dict)
    compared: int = 0
    agreed: int = 0
    approved: bool = False
    began: float = 0.0
    stable_reference: float | None = None
    stages: list[tuple[str, int]] = field(default_factory=list)

    def add(self, f: Feed) -> None:
        self.labeled += f.labeled
        self.correct += f.correct
        self.stable_labeled += f.stable_labeled
        self.stable_correct += f.stable_correct
        self.requests += f.requests
        self.errors += f.errors
        self.by_ms[f.ms] = self.by_ms.get(f.ms, 0) + f.requests
        self.compared += f.compared
        self.agreed += f.agreed

    def next_stage(self, at: float, stage: str, step: int) -> None:
        reference, stages = self.stable_reference, self.stages
        self.__init__()  # type: ignore[misc]
        self.began, self.stable_reference, self.stages = at, reference, [*stages, (stage, step)]

    def p99_ms(self) -> float:
        """The smallest latency that 99 % of the stage's requests did not exceed."""
        seen = 0
        for ms in sorted(self.by_ms):
            seen += self.by_ms[ms]
            if seen >= 0.99 * self.requests:
                return ms
        return max(self.by_ms)

    def measure_stable(self, p: Policy) -> None:
        if self.stable_labeled >= p.min_labeled:
            self.stable_reference = self.stable_correct / self.stable_labeled


def check_advance(ledger: Ledger, p: Policy, stage: str, now: float) -> None:
    """The evidence a stage must have had for the machine to move past it."""
    assert ledger.labeled >= p.min_labeled, "advanced on too few labeled samples"
    accuracy = ledger.correct / ledger.labeled
    assert ledger.stable_reference is not None, "advanced with no stable quality to compare"
    assert accuracy >= ledger.stable_reference - p.max_quality_drop - 1e-9
    assert ledger.requests >= p.min_requests
    assert ledger.errors / ledger.requests <= p.max_error_rate + 1e-9
    assert ledger.p99_ms() <= p.max_p99_ms
    if stage == "shadow":
        assert ledger.compared >= p.shadow_min_samples
        assert 1 - ledger.agreed / ledger.compared <= p.max_disagreement + 1e-9
    else:
        assert now - ledger.began >= p.step_seconds, "a canary step ended before its hold"
    if p.strategy == "manual":
        assert ledger.approved, "manual strategy advanced without approval"


def expected_stages(p: Policy) -> list[tuple[str, int]]:
    shadow = [("shadow", 0)] if p.uses_shadow else []
    canary = [] if p.strategy == "shadow" else [("canary", i) for i in range(len(p.steps))]
    return shadow + canary


def check_routing(world: World, before_stable: str | None, decision: Decision) -> None:
    state = decision.state
    desired = routing_for(state)
    assert world.routing == (desired if state.stable is not None else None)
    if world.routing is None:
        return
    named = {world.routing.stable, world.routing.candidate} - {None}
    assert named <= {state.stable, state.candidate}
    if state.active:
        assert world.routing.candidate == state.candidate != state.stable
    else:
        assert world.routing == SetRouting(stable=state.stable, baseline=state.baseline)
    for t in decision.transitions:
        if t.to_stage == "promoted":
            assert state.stable == t.candidate and world.aliases[ALIAS_CHAMPION] == t.candidate
            assert world.aliases.get(ALIAS_CANDIDATE) != t.candidate
        if t.to_stage == "aborted":
            assert t.stable == before_stable and world.aliases[ALIAS_CHAMPION] == before_stable
            assert world.aliases.get(ALIAS_CANDIDATE) != t.candidate


STRATEGIES = st.sampled_from(["shadow-then-canary", "canary", "shadow", "manual"])


class RolloutMachine(RuleBasedStateMachine):
    """Random traffic, time, candidates, failures and commands against one machine."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.ledger = Ledger()
        self.next_version = 2

    @initialize(strategy=STRATEGIES, rollback=st.booleans())
    def begin(self, strategy: str, rollback: bool) -> None:
        self.world = World(
            policy=policy(
                strategy=strategy,
                steps=(30, 100),
                max_inconclusive_seconds=30.0,
                rollback_on_drift=rollback,
            )
        )
        self._tick()
        self.world.aliases[ALIAS_CANDIDATE] = "2"
        self.next_version = 3
        self._tick(1)

    def _tick(self, advance: float = 0.0, **inputs: object) -> None:
        w, ledger = self.world, self.ledger
        before = w.state
        decision = w.tick(advance, **inputs)  # type: ignore[arg-type]
        if before.active:
            ledger.measure_stable(w.policy)
        for t in decision.transitions:
            advanced = t.from_stage in ("shadow", "canary") and t.to_stage in ("canary", "promoted")
            if advanced and t.candidate == before.candidate:
                check_advance(ledger, w.policy, before.stage, w.now)
            event(f"{t.from_stage} -> {t.to_stage}")
            if t.to_stage == "promoted":
                assert ledger.stages == expected_stages(w.policy), "skipped a stage"
        state = decision.state
        if state.active and (state.candidate, state.stage, state.step) != (
            before.candidate,
            before.stage,
            before.step,
        ):
            if state.candidate != before.candidate:
                ledger.stable_reference, ledger.stages = None, []
            ledger.next_stage(w.now, state.stage, state.step)
        check_routing(w, before.stable, decision)

    @rule(batch=traffic(max_size=10))
    def traffic(self, batch: list[tuple[Feed, float]]) -> None:
        for feed, wait in batch:
            self.world.add(feed.evidence())
            if self.world.state.active:
                self.ledger.add(feed)
            self._tick(wait)

    @rule(wait=st.floats(0, 40))
    def quiet(self, wait: float) -> None:
        self._tick(wait)

    @rule(kind=st.sampled_from(["candidate", "no-alias", "metrics", "registry", "reset", "drift"]))
    def disturb(self, kind: str) -> None:
        """A newer candidate, a removed alias, a failing source, a reset, a drift event."""
        world = self.world
        if kind == "candidate":
            world.aliases[ALIAS_CANDIDATE] = str(self.next_version)
            self.next_version += 1
            self._tick(1)
        elif kind == "no-alias":
            world.aliases.pop(ALIAS_CANDIDATE, None)
            self._tick(1)
        elif kind == "metrics":
            self._tick(1, metrics_error="redis: connection refused")
        elif kind == "registry":
            self._tick(1, registry_down=True)
        elif kind == "reset":
            world.counters = Evidence()
            self._tick(1)
        else:
            at = world.now + 1
            self._tick(
                1,
                drift=DriftSignal(event_id="d", detected_at=at, kind="concept", model_version="1"),
            )

    @rule(action=st.sampled_from(["approve", "abort"]), other=st.booleans())
    def command(self, action: str, other: bool) -> None:
        state = self.world.state
        version = "999" if other else state.candidate
        if action == "approve" and state.active and not other:
            self.ledger.approved = True
        self._tick(1, command=Command(action=action, version=version))  # type: ignore[arg-type]

    @invariant()
    def at_most_one_candidate(self) -> None:
        state = self.world.state
        assert (state.candidate is not None) == state.active
        assert state.candidate != state.stable or state.candidate is None


RolloutMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRolloutMachine = RolloutMachine.TestCase


@settings(max_examples=200, deadline=None)
@given(
    strategy=STRATEGIES,
    batch=traffic(max_size=40),
)
def test_every_rollout_ends_at_rest_with_consistent_routing(
    strategy: str, batch: list[tuple[Feed, float]]
) -> None:
    """Whatever the metrics, a rollout ends (promoted or aborted) once data stops."""
    p = policy(strategy=strategy, steps=(30, 100), max_inconclusive_seconds=30.0)
    world = World(policy=p)
    world.tick()
    world.propose("2")
    for feed, wait in batch:
        world.add(feed.evidence())
        world.tick(wait)
        if strategy == "manual":
            world.tick(0, command=Command(action="approve", version="2"))
    for _ in range(3):  # silence: every stage runs out of its inconclusive budget
        world.tick(p.step_seconds + p.max_inconclusive_seconds + 1)
        if strategy == "manual":
            world.tick(0, command=Command(action="approve", version="2"))
    assert world.state.stage in ("promoted", "aborted")
    event(f"{strategy}: {world.state.stage}")
    assert world.routing == SetRouting(stable=world.state.stable)
    if world.state.stage == "promoted":
        assert world.state.stable == "2" and world.aliases == {ALIAS_CHAMPION: "2"}
    else:
        assert world.state.stable == "1" and world.aliases == {ALIAS_CHAMPION: "1"}
