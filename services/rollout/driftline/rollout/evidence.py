"""Evidence: the live counters the rollout analysis judges, and each step's share of them.

The joiner (labeled quality, shadow agreement) and inference (requests, errors,
latency) add to windowed counters in Redis (`driftline.common.redis_state`). The driver
reads them *cumulatively*, from the time bucket in which the rollout began. The
state machine keeps the cumulative values it saw when the current stage or canary
step began (`RolloutState.step_base`) and judges only the difference.

Why not a time window per step: Redis buckets are 10 s wide, so a window that
starts at a step's beginning also holds up to 10 s of the step before, and with
short steps most of the "new" evidence would be old. The difference of cumulative
counts is exact: a sample counts in exactly one step.

Counts never go down while the source is whole. When they do (Redis restarted or
flushed, buckets past their retention of 6 h expired), differences against the old
base would be meaningless, so the machine treats it as a failed metrics source
(`Evidence.lost_counts`); `minus` also clamps at zero, so a reset can never create
evidence.
"""

from __future__ import annotations

import msgspec

from driftline.common.redis_state import LATENCY_BUCKETS_MS, ServingStats


def _less(a: float, b: float) -> float:
    return max(0.0, a - b)


class VersionCounters(msgspec.Struct, frozen=True, kw_only=True):
    """What one model version did: labeled quality and serving health."""

    labeled: int = 0
    correct: float = 0.0
    abs_error: float = 0.0
    requests: int = 0
    errors: int = 0
    latency: tuple[int, ...] = ()
    """Requests per bucket of `LATENCY_BUCKETS_MS` (not cumulative)."""

    def minus(self, base: VersionCounters) -> VersionCounters:
        width = max(len(self.latency), len(base.latency))
        mine = self.latency + (0,) * (width - len(self.latency))
        theirs = base.latency + (0,) * (width - len(base.latency))
        return VersionCounters(
            labeled=max(0, self.labeled - base.labeled),
            correct=_less(self.correct, base.correct),
            abs_error=_less(self.abs_error, base.abs_error),
            requests=max(0, self.requests - base.requests),
            errors=max(0, self.errors - base.errors),
            latency=tuple(max(0, a - b) for a, b in zip(mine, theirs, strict=True)),
        )

    def plus(self, other: VersionCounters) -> VersionCounters:
        width = max(len(self.latency), len(other.latency))
        mine = self.latency + (0,) * (width - len(self.latency))
        theirs = other.latency + (0,) * (width - len(other.latency))
        return VersionCounters(
            labeled=self.labeled + other.labeled,
            correct=self.correct + other.correct,
            abs_error=self.abs_error + other.abs_error,
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            latency=tuple(a + b for a, b in zip(mine, theirs, strict=True)),
        )

    @property
    def accuracy(self) -> float | None:
        # A correct count above the labeled count only comes from a clamped reset.
        return min(1.0, self.correct / self.labeled) if self.labeled else None

    @property
    def mae(self) -> float | None:
        return self.abs_error / self.labeled if self.labeled else None

    @property
    def error_rate(self) -> float | None:
        return min(1.0, self.errors / self.requests) if self.requests else None

    def counts(self) -> tuple[int, ...]:
        """The integer counts, each of which only grows while the source is whole."""
        return (self.labeled, self.requests, self.errors, sum(self.latency))

    def p99_ms(self) -> float | None:
        """Upper bound of the latency bucket holding the 99th percentile."""
        if len(self.latency) != len(LATENCY_BUCKETS_MS):
            return None
        return ServingStats(self.requests, self.errors, self.latency).quantile_ms(0.99)


class SegmentEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """Labeled quality of both versions on one segment value (`labeled`, `correct`,
    `abs_error` of each; the serving counts are not kept per segment)."""

    candidate: VersionCounters = msgspec.field(default_factory=VersionCounters)
    stable: VersionCounters = msgspec.field(default_factory=VersionCounters)

    def minus(self, base: SegmentEvidence) -> SegmentEvidence:
        return SegmentEvidence(
            candidate=self.candidate.minus(base.candidate), stable=self.stable.minus(base.stable)
        )


def segment_key(segment: str, value: str) -> str:
    """How a segment value is named in evidence, verdicts and status: `country=FR`."""
    return f"{segment}={value}"


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """Candidate and stable counters, and shadow agreement between them."""

    candidate: VersionCounters = msgspec.field(default_factory=VersionCounters)
    stable: VersionCounters = msgspec.field(default_factory=VersionCounters)
    compared: int = 0
    agreed: int = 0
    segments: dict[str, SegmentEvidence] = msgspec.field(default_factory=dict)
    """Per segment value (`segment_key`), read only when the worst segment is judged."""

    def minus(self, base: Evidence) -> Evidence:
        return Evidence(
            candidate=self.candidate.minus(base.candidate),
            stable=self.stable.minus(base.stable),
            compared=max(0, self.compared - base.compared),
            agreed=max(0, self.agreed - base.agreed),
            segments={
                key: seg.minus(base.segments.get(key, SegmentEvidence()))
                for key, seg in self.segments.items()
            },
        )

    def lost_counts(self, earlier: Evidence) -> bool:
        """True when some count is lower than in `earlier`: the source lost data."""
        now = (*self.candidate.counts(), *self.stable.counts(), self.compared, self.agreed)
        then = (
            *earlier.candidate.counts(),
            *earlier.stable.counts(),
            earlier.compared,
            earlier.agreed,
        )
        if any(a < b for a, b in zip(now, then, strict=True)):
            return True
        # A segment value gone altogether goes with the version's own counts (checked
        # above), or with a policy that stopped judging segments: no loss on its own.
        for key, seg in earlier.segments.items():
            mine = self.segments.get(key)
            if mine is not None and (
                mine.candidate.labeled < seg.candidate.labeled
                or mine.stable.labeled < seg.stable.labeled
            ):
                return True
        return False

    @property
    def disagreement(self) -> float | None:
        return 1.0 - min(1.0, self.agreed / self.compared) if self.compared else None
