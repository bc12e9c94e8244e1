"""Fairness figures of the protected segments, as Prometheus gauges.

Every joiner replica adds to the same segment counters in Redis, so a gap measured
in one process would see only its partitions' share. The gauges are read back from
Redis instead (like the pending-requests gauge): every replica exports the same
figures for the versions it scored lately, and dashboards take the `max`.
Binary classification only: the gaps compare positive predictions and true
positives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from driftline.api.spec import FairnessSpec
from driftline.common.redis_state import QualityStore, SegmentStats
from driftline.joiner import metrics
from driftline.joiner.segments import Segment, fairness_gaps

log = logging.getLogger(__name__)

SCORED_VARIANTS = ("stable", "candidate", "shadow", "baseline")
"""A version's predictions in every variant it was scored in count toward its figures."""


def _sum(stats: Iterable[dict[str, SegmentStats]]) -> dict[str, SegmentStats]:
    totals: dict[str, dict[str, float]] = {}
    for by_value in stats:
        for value, s in by_value.items():
            into = totals.setdefault(value, {})
            for name in SegmentStats.__dataclass_fields__:
                into[name] = into.get(name, 0.0) + getattr(s, name)
    return {value: SegmentStats.from_fields(f) for value, f in totals.items()}


class FairnessGauges:
    """Keeps the gap gauges of the protected segments up to date."""

    def __init__(
        self, quality: QualityStore, segments: Iterable[Segment], fairness: FairnessSpec
    ) -> None:
        self.quality = quality
        self.protected = [s.name for s in segments if s.protected]
        self.fairness = fairness
        self._versions: dict[str, float] = {}
        for segment in self.protected:
            metrics.fairness_limit.labels(segment, "parity").set(fairness.max_parity_gap)
            metrics.fairness_limit.labels(segment, "opportunity").set(fairness.max_opportunity_gap)

    def saw(self, versions: Iterable[str], now: float) -> None:
        """Versions this process scored at `now`."""
        if self.protected:
            for version in versions:
                self._versions[version] = now

    def refresh(self, client: Any, now: float) -> None:
        window = self.fairness.window_seconds
        for version, seen in list(self._versions.items()):
            if now - seen > window:  # no longer scored here: its gauges go
                del self._versions[version]
                for segment in self.protected:
                    for gauge in (metrics.parity_gap, metrics.opportunity_gap):
                        with suppress(KeyError):
                            gauge.remove(version, segment)
                continue
            for segment in self.protected:
                stats = _sum(
                    self.quality.read_segment(client, version, variant, segment, window, now)
                    for variant in SCORED_VARIANTS
                )
                gaps = fairness_gaps(stats, self.fairness.min_samples)
                for gauge, gap in (
                    (metrics.parity_gap, gaps.parity),
                    (metrics.opportunity_gap, gaps.opportunity),
                ):
                    if gap is None:
                        with suppress(KeyError):
                            gauge.remove(version, segment)
                    else:
                        gauge.labels(version, segment).set(gap)
