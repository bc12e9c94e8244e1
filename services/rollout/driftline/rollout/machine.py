"""The rollout state machine: `step(state, snapshot, policy, now) -> Decision`.

A pure function, no I/O: the driver (or the operator's timer) reads a snapshot,
calls `step`, and carries out the returned actions. Everything that changes is in
the returned state; every transition carries its reason into the state's history and
into a `RolloutEvent` action.

Stages::

    idle ──► shadow ──► canary[0] ──► … ──► canary[n-1] (100 %) ──► promoted
                │            │                     │
                └────────────┴─────────────────────┴──► aborted (rolled back)

Strategies (`rollout.strategy`):

- `shadow-then-canary`: shadow, then every canary step, then promote.
- `canary`: the canary steps only.
- `shadow`: shadow only, then promote straight to 100 %. Shadow scores the candidate
  on every request without serving it, so its evidence covers quality, agreement,
  latency and errors; a user who chose "shadow" chose not to expose any traffic to an
  unproven version, and a shadow that passes is that proof. (A strategy that never
  promotes would be a strategy of `manual` without the approve button.)
- `manual`: the stages of shadow-then-canary, but the machine advances past each stage
  only when its analysis passes *and* a person approved (`Command(action="approve")`,
  one approval per stage; it may arrive before the evidence does). A person can
  always abort. Safety aborts (failed analysis, failed metrics source, drift) apply
  to every strategy, manual included: an approval never overrides failing evidence.

When a stage advances:

- shadow passes once its analysis passes (there is no minimum time: `minSamples` and
  `minLabeled` are the bar);
- a canary step is held `stepSeconds`; then it advances once its analysis passes.
  A failing analysis aborts at once, even within the hold. An analysis still
  inconclusive `maxInconclusiveSeconds` after the stage became due aborts.
- Each stage judges only the evidence that arrived during it (`evidence` module), so
  the final promotion has at least `minLabeled` labeled candidate samples and passing
  thresholds in every stage it went through.

Aborts: failing analysis (also a candidate's accuracy estimated from confidence,
before labels, when `analysis.estimate` is set: it aborts or holds, never advances);
inconclusive too long; the metrics source failing (the snapshot says so, or its
counts went down) while a candidate is under test; a drift event detected during a
canary when `drift.onDrift` contains `rollback`; an abort command; the `candidate`
alias removed. An abort routes 100 % to the stable version, points `champion` back at
it and drops the `candidate` alias (only if it still names the aborted version).

A promotion points `champion` at the candidate (the drift monitor follows the
champion, so its reference moves with it), drops the `candidate` alias and serves
the new stable version alone.

**A newer candidate waits.** The `candidate` alias is the trainer's (or a person's)
statement of which version should be tested next. When it moves during a rollout to
another version that has not been decided yet, the running candidate is judged to
the end on its own evidence (promoted or aborted), and only then is the newer version
(whatever the alias names at that moment: the newest one) tested against the stable
version of that moment. A trainer publishes more often than a shadow gathers its
evidence (the demo: a version every ~13 s); restarting the shadow for each one threw
that evidence away again and again, so promotion came late or never. Nothing of the
old candidate's evidence could carry over: it was evidence about other weights.

One exception: a shadow that has gathered its minimum evidence (`minLabeled`
labeled samples of both versions, `shadow.minSamples` comparisons, the requests the
serving checks need) and is still inconclusive (no latency recorded) cannot conclude
on more of the same; a newer version waiting then supersedes it ("superseded",
recorded as aborted with that reason; no user saw it, and its aliases are left as
they are) and starts from the first stage with fresh evidence.

Removing the alias during a rollout aborts it (a person withdrew the candidate). A
version already promoted, aborted or superseded is never rolled out again, also
when the alias comes back to it. A candidate found while the metrics source is down
waits; one found before any stable version exists waits for the `champion` alias.

**The guard** (`rollout.guard`, `guard` module): a promotion opens a window in which
the previous champion is scored in shadow beside the new one. While it runs a newer
candidate waits; when the new champion's live labeled quality falls below the previous
champion's (or the baseline's) by more than allowed, with at least `minLabeled` labels
on each side, the machine rolls back: `promoted -> aborted`, the previous champion
stable again, `champion` pointed back at it. Too few labels or a failing metrics
source: no action. A person moving the `champion` alias ends the window.

At rest (idle, promoted, aborted) the machine follows the `champion` and `baseline`
aliases, so a person may pin a version by hand; during a rollout the stable version
is fixed and the aliases are the machine's to move.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.api.status import RolloutStage
from driftline.rollout.actions import Action, DeleteAlias, EmitEvent, SetAlias
from driftline.rollout.analysis import analyze
from driftline.rollout.evidence import Evidence
from driftline.rollout.guard import GuardWindow, judge
from driftline.rollout.policy import Policy
from driftline.rollout.rollout_state import (
    DECIDED_LIMIT,
    HISTORY_LIMIT,
    RolloutState,
    Transition,
    routing_for,
)
from driftline.rollout.snapshot import Snapshot

replace = msgspec.structs.replace


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    state: RolloutState
    actions: tuple[Action, ...] = ()
    transitions: tuple[Transition, ...] = ()


@dataclass
class _Tick:
    """The decision being built during one call of `step` (local to that call)."""

    state: RolloutState
    policy: Policy
    now: float
    actions: list[Action] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    def update(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)

    def note(self, reason: str) -> None:
        """A new reason without a transition (waiting, holding)."""
        if reason != self.state.reason:
            self.update(reason=reason)

    def move(self, stage: RolloutStage, reason: str, about: str | None, **changes: object) -> None:
        """Change stage (or step) for `reason`; `about` is the candidate concerned."""
        before = self.state.stage
        self.update(stage=stage, reason=reason, since=self.now, **changes)
        t = Transition(
            at=self.now,
            from_stage=before,
            to_stage=stage,
            stable=self.state.stable,
            candidate=about,
            weight=self.state.weight,
            reason=reason,
        )
        self.update(history=(*self.state.history, t)[-HISTORY_LIMIT:])
        self.transitions.append(t)
        self.actions.append(EmitEvent(event=t.event(self.policy.model)))

    def decide(self, version: str) -> tuple[str, ...]:
        return (*self.state.decided, version)[-DECIDED_LIMIT:]


def step(state: RolloutState, snapshot: Snapshot, policy: Policy, now: float) -> Decision:
    """One tick of the rollout: the new state and the actions that make it so."""
    tick = _Tick(state, policy, now)
    registry = snapshot.registry
    if registry is not None and registry.baseline != state.baseline:
        tick.update(baseline=registry.baseline)
    if state.active:
        _under_test(tick, snapshot)
    else:
        _at_rest(tick, snapshot)
    routing = routing_for(tick.state)
    if routing != routing_for(state):
        # Derived from the state, so the table can never disagree with the stage.
        tick.actions.insert(0, routing)
    return Decision(
        state=tick.state, actions=tuple(tick.actions), transitions=tuple(tick.transitions)
    )


# --- at rest: idle, promoted, aborted ---------------------------------------------------


def _at_rest(tick: _Tick, snapshot: Snapshot) -> None:
    if tick.state.guard is not None and _guard(tick, snapshot):
        return
    registry = snapshot.registry
    if registry is None:
        return
    state = tick.state
    if registry.champion is not None and registry.champion != state.stable:
        tick.move(
            state.stage,
            f"the champion alias names version {registry.champion}",
            None,
            stable=registry.champion,
        )
    candidate = registry.candidate
    state = tick.state
    if candidate is None or candidate == state.stable or candidate in state.decided:
        return
    if state.stable is None:
        tick.note(f"candidate {candidate} waits for a stable version (no champion alias)")
    elif snapshot.metrics_error is not None:
        tick.note(f"candidate {candidate} waits: metrics source failed ({snapshot.metrics_error})")
    else:
        _start(tick, candidate, f"candidate alias names version {candidate}")


def _guard(tick: _Tick, snapshot: Snapshot) -> bool:
    """One tick of a promotion's guard window; True while it holds (a newer candidate
    waits). Rolls back to the previous champion when the guard fails."""
    state = tick.state
    window = state.guard
    assert window is not None
    registry = snapshot.registry
    if state.stage != "promoted" or (
        registry is not None and registry.champion not in (None, window.champion)
    ):
        tick.update(guard=None)  # a person moved the champion: the guard has no say
        return False
    if tick.now >= window.until:
        tick.update(guard=None, reason=f"{state.reason}; guard window ended, version kept")
        return False
    if snapshot.metrics_error is not None or snapshot.guard is None:
        why = snapshot.metrics_error or "no reading"
        tick.note(f"guard of version {window.champion}: no action, metrics source failed ({why})")
        return True
    verdict, why = judge(snapshot.guard, tick.policy)
    if verdict != "fail":
        tick.note(f"guard of version {window.champion} ({verdict}): {why}")
        return True
    tick.move(
        "aborted",
        f"guard failed: {why}; version {window.champion} rolled back to {window.previous}",
        window.champion,
        stable=window.previous,
        guard=None,
    )
    tick.actions.append(SetAlias(alias=ALIAS_CHAMPION, version=window.previous))
    return True


def _start(tick: _Tick, candidate: str, reason: str) -> None:
    policy = tick.policy
    fresh = {
        "candidate": candidate,
        "started_at": tick.now,
        "step": 0,
        "step_base": Evidence(),
        "seen": Evidence(),
        "stable_quality": None,
        "stable_segments": {},
        "approved": False,
        "last_analysis": None,
    }
    if policy.uses_shadow:
        tick.move("shadow", f"{reason}; shadow", candidate, weight=0, canary_since=None, **fresh)
    else:
        weight = policy.steps[0]
        tick.move(
            "canary",
            f"{reason}; canary {weight}%",
            candidate,
            weight=weight,
            canary_since=tick.now,
            **fresh,
        )


# --- under test: shadow, canary ---------------------------------------------------------


def _under_test(tick: _Tick, snapshot: Snapshot) -> None:
    state, policy = tick.state, tick.policy
    candidate = state.candidate
    assert candidate is not None  # an active stage always names its candidate
    command = snapshot.command
    if command is not None and command.version not in (None, candidate):
        command = None  # meant for another candidate
    if command is not None and command.action == "abort":
        _abort(tick, "abort requested" + (f": {command.reason}" if command.reason else ""))
        return
    registry = snapshot.registry
    waiting = None
    if registry is not None and registry.candidate != candidate:
        newer = registry.candidate
        if newer is None or newer == state.stable:
            _abort(tick, "the candidate alias was removed")
            return
        if newer not in state.decided:
            waiting = newer
    if snapshot.metrics_error is not None:
        _abort(tick, f"metrics source failed: {snapshot.metrics_error}")
        return
    if snapshot.evidence is None:
        _abort(tick, "metrics source gave no reading")
        return
    if snapshot.evidence.lost_counts(state.seen):
        _abort(tick, "metrics source lost counts (Redis restarted, flushed or expired buckets)")
        return
    tick.update(seen=snapshot.evidence)
    drift = snapshot.drift
    if (
        policy.rollback_on_drift
        and state.stage == "canary"
        and drift is not None
        and state.canary_since is not None
        and drift.detected_at >= state.canary_since
    ):
        _abort(
            tick,
            f"{drift.kind} drift detected on version {drift.model_version} during the canary "
            "(drift.onDrift includes rollback)",
        )
        return
    if command is not None and command.action == "approve" and not state.approved:
        tick.update(approved=True)
    _judge(tick, snapshot)
    if waiting is None or not tick.state.active:
        return
    analysis = tick.state.last_analysis
    if (
        tick.state.stage == "shadow"
        and analysis is not None
        and analysis.verdict == "inconclusive"
        and analysis.gathered
    ):
        _supersede(tick, candidate, waiting)
        return
    tick.note(f"{tick.state.reason}; version {waiting} waits for this rollout to end")


def _supersede(tick: _Tick, running: str, newer: str) -> None:
    analysis = tick.state.last_analysis
    why = f" (shadow inconclusive with its evidence in: {analysis.reason})" if analysis else ""
    tick.move(
        "aborted",
        f"superseded by version {newer}{why}",
        running,
        candidate=None,
        weight=0,
        decided=tick.decide(running),
    )
    _start(tick, newer, f"version {newer} supersedes {running}")


def _judge(tick: _Tick, snapshot: Snapshot) -> None:
    state, policy, now = tick.state, tick.policy, tick.now
    evidence = snapshot.evidence
    assert evidence is not None and state.candidate is not None
    estimates = (
        snapshot.estimates.get(state.candidate),
        snapshot.estimates.get(state.stable) if state.stable is not None else None,
    )
    analysis = analyze(
        evidence.minus(state.step_base),
        policy,
        stage=state.stage,
        weight=state.weight,
        reference=state.stable_quality,
        at=now,
        segment_references=state.stable_segments,
        estimates=estimates,
    )
    tick.update(
        last_analysis=analysis,
        stable_quality=(
            analysis.stable_quality if analysis.stable_quality is not None else state.stable_quality
        ),
        stable_segments=(
            {**state.stable_segments, **analysis.stable_segments}
            if analysis.stable_segments
            else state.stable_segments
        ),
    )
    where = _where(state)
    if analysis.verdict == "fail":
        _abort(tick, f"{where} failed: {analysis.reason}")
        return
    due = state.since + (policy.step_seconds if state.stage == "canary" else 0.0)
    if now < due:
        tick.note(f"{where}: holding until the step has run {policy.step_seconds:g}s")
        return
    if analysis.verdict == "inconclusive":
        waited = now - due
        if waited > policy.max_inconclusive_seconds:
            _abort(
                tick,
                f"{where} inconclusive for {waited:.0f}s "
                f"(limit {policy.max_inconclusive_seconds:g}s): {analysis.reason}",
            )
        else:
            tick.note(f"{where} inconclusive: {analysis.reason}")
        return
    if policy.strategy == "manual" and not tick.state.approved:
        tick.note(f"{where} passed ({analysis.reason}); waiting for approval")
        return
    _advance(tick, evidence, f"{where} passed: {analysis.reason}")


def _where(state: RolloutState) -> str:
    return "shadow" if state.stage == "shadow" else f"canary {state.weight}%"


def _advance(tick: _Tick, evidence: Evidence, reason: str) -> None:
    state, policy = tick.state, tick.policy
    candidate = state.candidate
    assert candidate is not None
    if state.stage == "shadow" and policy.strategy != "shadow":
        nxt: int | None = 0
    elif state.stage == "canary" and state.step + 1 < len(policy.steps):
        nxt = state.step + 1
    else:
        nxt = None
    if nxt is None:
        _promote(tick, candidate, reason)
        return
    weight = policy.steps[nxt]
    tick.move(
        "canary",
        f"{reason}; canary {weight}%",
        candidate,
        step=nxt,
        weight=weight,
        step_base=evidence,
        approved=False,
        canary_since=state.canary_since if state.canary_since is not None else tick.now,
    )


def _promote(tick: _Tick, candidate: str, reason: str) -> None:
    previous, guard = tick.state.stable, tick.policy.guard
    window = (
        GuardWindow(
            champion=candidate,
            previous=previous,
            since=tick.now,
            until=tick.now + guard.window_seconds,
        )
        if guard is not None and previous is not None
        else None
    )
    tick.move(
        "promoted",
        f"{reason}; version {candidate} promoted",
        candidate,
        stable=candidate,
        candidate=None,
        weight=0,
        step=0,
        started_at=None,
        canary_since=None,
        approved=False,
        decided=tick.decide(candidate),
        guard=window,
    )
    tick.actions += [
        SetAlias(alias=ALIAS_CHAMPION, version=candidate),
        DeleteAlias(alias=ALIAS_CANDIDATE, version=candidate),
    ]


def _abort(tick: _Tick, reason: str) -> None:
    state = tick.state
    candidate = state.candidate
    assert candidate is not None
    tick.move(
        "aborted",
        f"{reason}; version {candidate} rolled back",
        candidate,
        candidate=None,
        weight=0,
        step=0,
        started_at=None,
        canary_since=None,
        approved=False,
        decided=tick.decide(candidate),
    )
    if state.stable is not None:
        tick.actions.append(SetAlias(alias=ALIAS_CHAMPION, version=state.stable))
    tick.actions.append(DeleteAlias(alias=ALIAS_CANDIDATE, version=candidate))
