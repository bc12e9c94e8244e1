"""Segments: which group of `spec.monitoring.segments` a prediction falls in.

A segment names a feature logged with each prediction. A numeric feature falls in
one of the segment's bins (`<18`, `[18,30)`, `>=50`); a categorical one counts by
value. The number of values is bounded, so counters and metric labels stay
bounded: a segment with `values` keeps those apart and counts the rest as `other`;
one without keeps the first `maxValues` values seen apart, across every joiner
replica (a set in Redis, see `store.JoinStore.admit`), and counts later ones as
`other`. A prediction without a usable value counts as `missing`.

The fairness figures of a protected segment come from the same counters: the
demographic parity difference is the largest gap between the positive-prediction
rates of its values, the equal-opportunity difference the largest gap between
their true-positive rates.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from driftline.api.events import Features
from driftline.api.spec import SegmentSpec
from driftline.common.redis_state import SEGMENT_MISSING, SEGMENT_OTHER, SegmentStats

MAX_VALUE_LENGTH = 64
"""Longer categorical values are cut to this many characters (a metric label)."""


def _edge(x: float) -> str:
    return f"{x:g}"


def bin_labels(bins: Sequence[float]) -> list[str]:
    """The names of the groups that rising `bins` make: `<a`, `[a,b)`, ..., `>=z`."""
    labels = [f"<{_edge(bins[0])}"]
    labels += [f"[{_edge(a)},{_edge(b)})" for a, b in pairwise(bins)]
    labels.append(f">={_edge(bins[-1])}")
    return labels


@dataclass(frozen=True)
class Segment:
    """One segment of the spec, ready to place values."""

    name: str
    bins: tuple[float, ...] | None
    labels: tuple[str, ...]
    """Bin names (numeric segments)."""
    listed: frozenset[str] | None
    """The values kept apart, when the spec lists them."""
    max_values: int
    protected: bool

    @classmethod
    def from_spec(cls, spec: SegmentSpec) -> Segment:
        bins = tuple(spec.bins) if spec.bins is not None else None
        return cls(
            name=spec.name,
            bins=bins,
            labels=tuple(bin_labels(bins)) if bins else (),
            listed=frozenset(spec.values) if spec.values is not None else None,
            max_values=spec.max_values,
            protected=spec.protected,
        )

    @property
    def admits(self) -> bool:
        """Its values are kept apart first come, first served (capped in Redis)."""
        return self.bins is None and self.listed is None

    def place(self, value: object) -> str:
        """The group of a feature value as logged; `admits` segments still have to
        have it admitted (else it counts as `other`)."""
        if value is None or isinstance(value, bool):
            return SEGMENT_MISSING
        if self.bins is not None:
            if not isinstance(value, int | float) or math.isnan(value):
                return SEGMENT_MISSING
            return self.labels[bisect.bisect_right(self.bins, value)]
        if isinstance(value, float):
            # The categorical rules (common.feature_values): 5 is the category "5",
            # 5.0 is no category.
            return SEGMENT_MISSING
        text = str(value)[:MAX_VALUE_LENGTH]
        if not text:
            return SEGMENT_MISSING
        if self.listed is not None and text not in self.listed:
            return SEGMENT_OTHER
        return text


def segments_of(specs: Sequence[SegmentSpec]) -> tuple[Segment, ...]:
    return tuple(Segment.from_spec(s) for s in specs)


def place_all(segments: Sequence[Segment], features: Features) -> list[tuple[str, str]]:
    """(segment, group) of one prediction's features, for every segment."""
    return [(s.name, s.place(features.get(s.name))) for s in segments]


@dataclass(frozen=True)
class Gaps:
    """Fairness figures of one protected segment over a window (None: too few samples)."""

    parity: float | None
    """Largest minus smallest positive-prediction rate among its values."""
    opportunity: float | None
    """Largest minus smallest true-positive rate among its values."""


def fairness_gaps(stats: Mapping[str, SegmentStats], min_samples: int) -> Gaps:
    """The gaps between the values of a segment that have at least `min_samples`
    predictions (positive rate) or positive labels (true-positive rate). `missing`
    and `other` are no group of their own and are left out; a gap needs two values."""
    rates, tprs = [], []
    for value, s in stats.items():
        if value in (SEGMENT_MISSING, SEGMENT_OTHER):
            continue
        if s.count >= min_samples and s.positive_rate is not None:
            rates.append(s.positive_rate)
        if s.label_positive >= min_samples and s.recall is not None:
            tprs.append(s.recall)
    return Gaps(
        parity=max(rates) - min(rates) if len(rates) >= 2 else None,
        opportunity=max(tprs) - min(tprs) if len(tprs) >= 2 else None,
    )
