"""What the demo watches while traffic flows, and the verdict it draws.

Once a second the watcher reads what the parts publish for each other in Redis (the
routing table, the rollout record, the latest drift event, live quality) and what the
application itself saw (`TrafficLog`). The served model and the frozen baseline are
compared on one clock, the joiner's: both curves are its live quality counters (the
served variants, and the baseline scored beside them on the same requests). A served
curve timed by request against a baseline timed by the joiner would make the same
model look better as baseline right after a switch, its labels arriving later. It acts the
scenario's script (switch the concept, inject a bad candidate), turns transitions
into markers on the timeline, samples the curves, and decides when to stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from driftline.api.events import DriftEvent
from driftline.common.redis_state import EstimateStore, QualityStore, RoutingStore, drift_key
from driftline.common.streams import DriftingStream
from driftline.local.report import Curve, Marker, ScenarioResult
from driftline.local.traffic import TrafficLog
from driftline.rollout.store import RolloutStore

if TYPE_CHECKING:
    from driftline.local.runtime import LocalRuntime

WINDOW = 10.0
CLEAR_MARGIN = 0.05


@dataclass(frozen=True)
class Plan:
    """How long a scenario runs, and how hard: what the watcher holds it to."""

    warmup: float
    """Seconds of traffic on the first concept."""
    max_after_switch: float
    """Give up waiting for a promotion after this long."""
    after_decision: float
    """Seconds of traffic after the promotion (or abort), to show its effect."""
    rate: float
    bootstrap_samples: int


class Watcher:
    def __init__(
        self,
        runtime: LocalRuntime,
        plan: Plan,
        stream: DriftingStream,
        scenario: str,
        switch_to: int | None = None,
    ) -> None:
        import redis

        self.runtime = runtime
        self.plan = plan
        self.stream = stream
        self.scenario = scenario
        self.switch_to = switch_to
        self.traffic: TrafficLog | None = None
        self.inject: Callable[[], str] | None = None
        ns, name = runtime.model.metadata.namespace, runtime.model.name
        self.redis = redis.Redis.from_url(runtime.endpoints.redis_url, socket_timeout=2)
        self.routing_store = RoutingStore(ns, name)
        self.rollout_store = RolloutStore(ns, name)
        self.quality = QualityStore(ns, name)
        self.estimates = EstimateStore(ns, name)
        self.drift_key = drift_key(ns, name)
        self.event_at: float | None = None  # concept switch or injection, run seconds
        self.injected: str | None = None
        self.decided_at: float | None = None
        self.decision: str | None = None
        self.decided_version: str | None = None
        self.finished = False
        self.markers: list[Marker] = []
        self.served = Curve("served by Driftline (learning)")
        self.baseline = Curve("frozen bootstrap model (baseline)")
        # The drift monitor's accuracy estimate from the champion's confidence, no
        # labels: it follows a covariate shift, and cannot see a change of concept.
        self.estimated = Curve("estimated from confidence, before labels (champion)")
        self.status: dict[str, Any] = {"phase": "warm-up"}
        self._seen: set[tuple[float, str]] = set()
        self._rolled_out_at: dict[str, float] = {}  # candidate -> first rollout stage seen
        self._drifts: set[str] = set()
        self._last_sample = -1e9
        self._baseline_version: str | None = None

    @property
    def start(self) -> float:
        return self.traffic.start if self.traffic else time.time()

    def now(self) -> float:
        return time.time() - self.start

    # -- one poll ---------------------------------------------------------------------

    def poll(self) -> None:
        t = self.now()
        self._act(t)
        try:
            self._read(t)
        except Exception as exc:  # Redis busy or restarting: the next poll will do
            self.status["error"] = str(exc)
        self._decide(t)

    def _act(self, t: float) -> None:
        if self.event_at is not None or t < self.plan.warmup:
            return
        if self.scenario == "drift" and self.switch_to is not None:
            self.stream.switch_to(self.switch_to)
            self.event_at = t
            self.markers.append(Marker(t, "the world changes (SEA concept switch)", "truth"))
            self.status["phase"] = "drifted"
        elif self.inject is not None:
            self.injected = self.inject()
            self.event_at = t
            self.markers.append(Marker(t, f"broken candidate v{self.injected} published", "truth"))
            self.status["phase"] = "bad candidate published"

    def _read(self, t: float) -> None:
        routing = self.routing_store.read(self.redis)
        record = self.rollout_store.load(self.redis)
        raw = self.redis.get(self.drift_key)
        if routing is not None:
            self._baseline_version = routing.baseline
            self.status["routing"] = routing
        if record is not None:
            self.status["rollout"] = record.state
            for tr in record.state.history:
                key = (tr.at, tr.to_stage)
                if key in self._seen or tr.at < self.start:
                    continue
                self._seen.add(key)
                self._transition(
                    tr.at - self.start, tr.to_stage, tr.candidate, tr.weight, tr.reason
                )
        if raw:
            event = msgspec.json.decode(raw, type=DriftEvent)
            self.status["drift"] = event
            if event.event_id not in self._drifts and event.detected_at >= self.start:
                self._drifts.add(event.event_id)
                self.markers.append(
                    Marker(event.detected_at - self.start, f"{event.kind} drift detected", "drift")
                )
        if t - self._last_sample >= 2.0 and self.traffic is not None:
            self._last_sample = t
            served = self._joined_served(WINDOW)
            if served is not None:
                self.served.points.append((t, served))
            if self._baseline_version:
                stats = self.quality.read(self.redis, self._baseline_version, "baseline", WINDOW)
                if stats.accuracy is not None and stats.count >= 20:
                    self.baseline.points.append((t, stats.accuracy))
            self._sample_estimate(t)
            self.status["served_accuracy"] = served
            self.status["baseline_accuracy"] = (
                self.baseline.points[-1][1] if self.baseline.points else None
            )

    def _segment_rows(self, window: float) -> list[tuple[str, str]]:
        """Per value of each `monitoring.segments` entry: the promoted version's and the
        frozen baseline's accuracy since the promotion (the joiner's segment counters)."""
        rows = []
        for segment in self.runtime.model.spec.monitoring.segments:
            served = self.quality.read_segment(
                self.redis, self.decided_version or "", "stable", segment.name, window
            )
            base = (
                self.quality.read_segment(
                    self.redis, self._baseline_version, "baseline", segment.name, window
                )
                if self._baseline_version else {}
            )  # fmt: skip
            for value in sorted(set(served) | set(base)):
                mine, theirs = served.get(value), base.get(value)
                rows.append(
                    (
                        f"after promotion, {segment.name} {value}: served / frozen baseline",
                        f"{_pct(mine.accuracy if mine else None)} / "
                        f"{_pct(theirs.accuracy if theirs else None)}",
                    )
                )
        return rows

    def _sample_estimate(self, t: float) -> None:
        routing = self.status.get("routing")
        champion = getattr(routing, "stable", None)
        estimate = self.estimates.read(self.redis).get(champion) if champion else None
        if estimate is not None and estimate.rows >= 20 and time.time() - estimate.at < 30:
            self.estimated.points.append((t, estimate.accuracy))

    def _joined_served(self, window: float, least: int = 20) -> float | None:
        """Accuracy of the served answers (variants stable and candidate, every version
        the application saw) over the joiner's last `window` seconds."""
        assert self.traffic is not None
        count = correct = 0.0
        for version in list(self.traffic.versions_seen):
            for variant in ("stable", "candidate"):
                stats = self.quality.read(self.redis, version, variant, window)
                count += stats.count
                correct += stats.correct
        return correct / count if count >= least else None

    def _transition(
        self, at: float, stage: str, candidate: str | None, weight: int, reason: str
    ) -> None:
        label = {"shadow": f"v{candidate} in shadow", "canary": f"v{candidate} canary {weight}%",
                 "promoted": f"v{candidate} promoted", "aborted": f"v{candidate} aborted"}.get(
                     stage, f"{stage} v{candidate}")  # fmt: skip
        kind = stage if stage in ("promoted", "aborted") else "rollout"
        self.markers.append(Marker(at, label, kind))
        if candidate is not None:
            self._rolled_out_at.setdefault(candidate, at)
        if self.decided_at is None and self.event_at is not None and at >= self.event_at:
            # The recovery is a version that entered its rollout after the world
            # changed. One that was already rolling out (a periodic publication of the
            # old concept) may still pass its analysis, as no worse than stable on the
            # new data; it is marked, and the watch goes on.
            learned_after = self._rolled_out_at.get(candidate or "", at) >= self.event_at
            if self.scenario == "drift" and stage == "promoted" and learned_after:
                self.decided_at, self.decision, self.decided_version = at, stage, candidate
            elif (
                self.scenario != "drift"
                and candidate == self.injected
                and stage in ("aborted", "promoted")
            ):
                self.decided_at, self.decision, self.decided_version = at, stage, candidate
                self.status["abort_reason"] = reason

    def _decide(self, t: float) -> None:
        if self.decided_at is not None and t >= self.decided_at + self.plan.after_decision:
            self.finished = True
        if self.event_at is not None and t >= self.event_at + self.plan.max_after_switch:
            self.finished = True
        self.status["t"] = t

    # -- verdicts ---------------------------------------------------------------------

    def _totals(self) -> list[tuple[str, str]]:
        assert self.traffic is not None
        tot = self.traffic.totals()
        rows = [
            ("requests sent / answered", f"{tot['sent']} / {tot['answered']}"),
            ("errors / shed", f"{tot['errors']} / {tot['shed']}"),
        ]
        if self.traffic.error_causes:
            causes = sorted(self.traffic.error_causes.items(), key=lambda kv: -kv[1])
            rows.append(("errors by cause", ", ".join(f"{c}: {n}" for c, n in causes)))
        return [*rows, ("outcomes sent", str(self.traffic.outcomes_sent))]

    def drift_result(self) -> ScenarioResult:
        assert self.traffic is not None
        log, t_end = self.traffic, self.now()
        switch = self.event_at or t_end
        before = log.accuracy(max(0.0, switch - 20), switch)
        drifts = [m.t for m in self.markers if m.kind == "drift" and m.t >= switch]
        summary: list[tuple[str, str]] = [
            ("concept switch at", f"{switch:.0f} s"),
            ("accuracy before the switch (served)", _pct(before)),
            ("drift detected after", f"{drifts[0] - switch:.1f} s" if drifts else "not detected"),
        ]
        passed = False
        if self.decided_at is not None:
            window = max(WINDOW, t_end - self.decided_at - 2)
            after_served = self._joined_served(window)
            base = (
                self.quality.read(self.redis, self._baseline_version, "baseline", window)
                if self._baseline_version else None
            )  # fmt: skip
            after_base = base.accuracy if base else None
            summary += [
                (
                    "promoted",
                    f"v{self.decided_version}, {self.decided_at - switch:.0f} s after the switch",
                ),
                ("accuracy after promotion: served", _pct(after_served)),
                ("accuracy after promotion: frozen baseline", _pct(after_base)),
                *self._segment_rows(window),
            ]
            passed = (
                after_served is not None
                and after_base is not None
                and after_served >= after_base + CLEAR_MARGIN
            )
        else:
            summary.append(("promoted", "no promotion within the time limit"))
        return ScenarioResult(
            name="drift",
            title="Concept drift: detected, learned, promoted",
            passed=passed,
            summary=summary + self._totals(),
            curves=[self.served, self.baseline, self.estimated],
            markers=sorted(self.markers, key=lambda m: m.t),
            notes=[
                "The dotted curve is the drift monitor's accuracy estimated from the "
                "champion's confidence before any label (over its last drift window of "
                "predictions): it follows a shift of the inputs, but a change of concept "
                "leaves the confidence as it was, so after the switch it stays above what "
                "the labels show (docs/drift.md)."
            ],
        )

    def bad_candidate_result(self) -> ScenarioResult:
        assert self.traffic is not None
        log, t_end = self.traffic, self.now()
        injected = self.event_at or t_end
        canary_start = next((m.t for m in self.markers if "canary" in m.label), None)
        end = self.decided_at or t_end
        served_total = served_candidate = 0
        for sec, s in log.seconds.items():
            if canary_start is not None and canary_start <= sec < end:
                served_total += s.answered
                served_candidate += s.by_variant.get("candidate", (0, 0))[0]
        share = served_candidate / served_total if served_total else 0.0
        first_weight = 20
        stable_before = log.accuracy(max(0.0, injected - 20), injected, "stable")
        stable_during = log.accuracy(canary_start or injected, end, "stable")
        summary = [
            ("broken candidate", f"v{self.injected} at {injected:.0f} s"),
            ("decision", f"{self.decision or 'none'} after {end - injected:.0f} s"),
            ("reason", str(self.status.get("abort_reason", "-"))),
            ("share of answers from the candidate during its canary", _pct(share)),
            ("accuracy of stable answers before / during",
             f"{_pct(stable_before)} / {_pct(stable_during)}"),
        ]  # fmt: skip
        passed = (
            self.decision == "aborted"
            and share <= first_weight / 100 + 0.05
            and stable_before is not None
            and stable_during is not None
            and stable_during >= stable_before - 0.03
        )
        return ScenarioResult(
            name="bad-candidate",
            title="A broken candidate: canary aborted, rolled back",
            passed=passed,
            summary=summary + self._totals(),
            curves=[self.served, self.baseline],
            markers=sorted(self.markers, key=lambda m: m.t),
        )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"
