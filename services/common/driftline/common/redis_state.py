"""Shared state in Redis: the layout every part reads and writes.

    driftline:<ns>:<model>:routing                         routing table (JSON), see api.routing
    driftline:<ns>:<model>:routing:updates                 pub/sub channel: a new table was written
    driftline:<ns>:<model>:quality:<version>:<variant>:<b> live quality counters, bucket b
    driftline:<ns>:<model>:agreement:<stable>:<cand>:<b>   shadow agreement counters
    driftline:<ns>:<model>:segment:<version>:<variant>:<segment>:<b>
                                                           live quality per segment value
                                                           (fields `<value>|<field>`)
    driftline:<ns>:<model>:segment-values:<segment>        values kept apart (set, capped)
    driftline:<ns>:<model>:serving:<version>:<variant>:<b> request/error/latency counters
    driftline:<ns>:<model>:drift:last                      latest drift event (JSON)
    driftline:<ns>:<model>:drift:estimate                  accuracy estimated from
                                                           confidence (hash: version -> JSON)
    driftline:<ns>:<model>:rollout                         rollout state (JSON), see rollout
    driftline:<ns>:<model>:rollout:command                 pending approve/abort (JSON)

Windowed counters are hashes per time bucket (HINCRBYFLOAT), summed over the
buckets of a window when read: exact counts, bounded memory (buckets expire), and
many writers (inference pods, joiner replicas) add up without coordination.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.api.routing import RoutingTable, decode_table, encode_table

BUCKET_SECONDS = 10
RETENTION_SECONDS = 6 * 3600

# Upper bounds (ms) of the serving latency histogram kept in Redis.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 1000, 2500, math.inf,
)  # fmt: skip


def model_prefix(namespace: str, name: str) -> str:
    return f"driftline:{namespace}:{name}"


class WindowedCounters:
    """Float counters in Redis, bucketed by time, summed over a window on read."""

    def __init__(
        self,
        key: str,
        bucket_seconds: int = BUCKET_SECONDS,
        retention_seconds: int = RETENTION_SECONDS,
    ) -> None:
        self.key = key
        self.bucket_seconds = bucket_seconds
        self.retention_seconds = retention_seconds

    def _bucket(self, now: float) -> int:
        return int(now // self.bucket_seconds)

    def bucket_key(self, now: float | None = None) -> str:
        """The hash that holds the bucket of `now` (for writers that batch in a script)."""
        return f"{self.key}:{self._bucket(time.time() if now is None else now)}"

    def add(self, pipe: Any, fields: Mapping[str, float], now: float | None = None) -> None:
        """Queue increments on a redis pipeline (the caller executes it, maybe in MULTI)."""
        key = self.bucket_key(now)
        for name, value in fields.items():
            if value:
                pipe.hincrbyfloat(key, name, value)
        pipe.expire(key, self.retention_seconds)

    def read(
        self, client: Any, window_seconds: float, now: float | None = None
    ) -> dict[str, float]:
        """Sums of each field over the buckets that overlap the last `window_seconds`."""
        now = time.time() if now is None else now
        last = self._bucket(now)
        first = self._bucket(now - window_seconds)
        pipe = client.pipeline(transaction=False)
        for bucket in range(first, last + 1):
            pipe.hgetall(f"{self.key}:{bucket}")
        totals: dict[str, float] = {}
        for row in pipe.execute():
            for name, value in row.items():
                field = name.decode() if isinstance(name, bytes) else name
                totals[field] = totals.get(field, 0.0) + float(value)
        return totals


# --- routing ---------------------------------------------------------------------------


class RoutingStore:
    """Reads and writes the routing table; writers publish a change notification."""

    def __init__(self, namespace: str, name: str) -> None:
        self.key = f"{model_prefix(namespace, name)}:routing"
        self.channel = f"{self.key}:updates"

    def read(self, client: Any) -> RoutingTable | None:
        data = client.get(self.key)
        return decode_table(data) if data else None

    def write(self, client: Any, table: RoutingTable) -> None:
        data = encode_table(table)
        pipe = client.pipeline(transaction=True)
        pipe.set(self.key, data)
        pipe.publish(self.channel, data)
        pipe.execute()


# --- live quality (joiner writes, rollout reads) ---------------------------------------


@dataclass(frozen=True)
class QualityStats:
    """Live quality of one model version in one variant over a window."""

    count: int
    correct: float = 0.0
    abs_error: float = 0.0
    sq_error: float = 0.0
    log_loss: float = 0.0
    log_loss_count: int = 0

    @classmethod
    def from_fields(cls, f: Mapping[str, float]) -> QualityStats:
        return cls(
            count=int(f.get("count", 0)),
            correct=f.get("correct", 0.0),
            abs_error=f.get("abs_error", 0.0),
            sq_error=f.get("sq_error", 0.0),
            log_loss=f.get("log_loss", 0.0),
            log_loss_count=int(f.get("log_loss_count", 0)),
        )

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None

    @property
    def mae(self) -> float | None:
        return self.abs_error / self.count if self.count else None

    @property
    def rmse(self) -> float | None:
        return math.sqrt(self.sq_error / self.count) if self.count else None

    @property
    def mean_log_loss(self) -> float | None:
        return self.log_loss / self.log_loss_count if self.log_loss_count else None


Scored = tuple[float, float, list[float] | None]
"""A scored prediction: its output, the outcome's label, its class scores."""


def quality_fields(
    task: str, output: float, label: float, scores: list[float] | None
) -> dict[str, float]:
    """The counter increments one scored prediction adds to its version's quality."""
    fields: dict[str, float] = {}
    quality_sums(fields, task, [(output, label, scores)])
    return fields


def quality_sums(into: dict[str, float], task: str, scored: Sequence[Scored]) -> None:
    """Add the `quality_fields` of each scored prediction to `into`, in place, in
    order (the joiner sums thousands per batch, in one loop per group): `count`;
    classification `correct`, `log_loss` and `log_loss_count` where the label has a
    score, the calibration bin of the answered class's score; regression `abs_error`
    and `sq_error`."""
    get = into.get
    if task != "classification":
        abs_error, sq_error = get("abs_error", 0.0), get("sq_error", 0.0)
        for output, label, _ in scored:
            err = output - label
            abs_error += abs(err)
            sq_error += err * err
        into["count"] = get("count", 0.0) + len(scored)
        into["abs_error"], into["sq_error"] = abs_error, sq_error
        return
    correct = get("correct", 0.0)
    log_loss, losses = get("log_loss"), get("log_loss_count")
    bins: dict[int, list[float]] = {}
    log = math.log
    for output, label, scores in scored:
        right = int(output) == int(label)
        if right:
            correct += 1.0
        if scores:
            size, k = len(scores), int(label)
            if 0 <= k < size:
                p = min(max(scores[k], 1e-15), 1.0)
                log_loss = (log_loss or 0.0) - log(p)
                losses = (losses or 0.0) + 1.0
            k = int(output)
            if 0 <= k < size:
                c = min(max(float(scores[k]), 0.0), 1.0)
                at = min(int(c * CALIBRATION_BINS), CALIBRATION_BINS - 1)
                sums = bins.get(at)
                if sums is None:
                    n, conf, ok = _CALIBRATION_FIELDS[at]
                    sums = bins[at] = [get(n, 0.0), get(conf, 0.0), get(ok, 0.0)]
                sums[0] += 1.0
                sums[1] += c
                if right:
                    sums[2] += 1.0
    into["count"] = get("count", 0.0) + len(scored)
    into["correct"] = correct
    if log_loss is not None and losses is not None:
        into["log_loss"], into["log_loss_count"] = log_loss, losses
    for at, sums in bins.items():
        for name, value in zip(_CALIBRATION_FIELDS[at], sums, strict=True):
            into[name] = value


# --- calibration: does the model's confidence say how often it is right? ----------------

CALIBRATION_BINS = 10
"""Equal-width confidence bins: [0, 0.1), [0.1, 0.2), ... [0.9, 1]."""
_CALIBRATION_FIELDS = tuple(
    (f"cal{k}_n", f"cal{k}_conf", f"cal{k}_correct") for k in range(CALIBRATION_BINS)
)


def calibration_fields(confidence: float, correct: bool) -> dict[str, float]:
    """The increments of one labeled prediction: its confidence (the score of the class
    it answered) in its bin, and whether it was right. Fields `cal<bin>_n`,
    `cal<bin>_conf` and `cal<bin>_correct`."""
    (n, conf, right), c = _calibration_bin(confidence)
    return {n: 1.0, conf: c, right: 1.0 if correct else 0.0}


def _calibration_bin(confidence: float) -> tuple[tuple[str, str, str], float]:
    """The field names of the bin a confidence falls in, and the confidence clamped."""
    c = min(max(float(confidence), 0.0), 1.0)
    return _CALIBRATION_FIELDS[min(int(c * CALIBRATION_BINS), CALIBRATION_BINS - 1)], c


def is_calibration_field(name: str) -> bool:
    return name.startswith("cal") and "_" in name


@dataclass(frozen=True)
class Calibration:
    """Confidence against accuracy over a window, from the `cal<bin>_*` sums."""

    count: int
    error: float
    """Expected calibration error: the count-weighted mean gap between each bin's mean
    confidence and its accuracy."""
    confidence: float
    accuracy: float
    bins: tuple[tuple[int, float, float], ...]
    """Per bin: (predictions, mean confidence, accuracy); (0, 0, 0) when empty."""

    @classmethod
    def from_fields(cls, f: Mapping[str, float]) -> Calibration | None:
        bins = []
        for k in range(CALIBRATION_BINS):
            n = f.get(f"cal{k}_n", 0.0)
            if n <= 0:
                bins.append((0, 0.0, 0.0))
                continue
            bins.append((int(n), f.get(f"cal{k}_conf", 0.0) / n, f.get(f"cal{k}_correct", 0.0) / n))
        total = sum(n for n, _, _ in bins)
        if total == 0:
            return None
        error = sum(n * abs(conf - acc) for n, conf, acc in bins) / total
        confidence = sum(n * conf for n, conf, _ in bins) / total
        accuracy = sum(n * acc for n, _, acc in bins) / total
        return cls(total, error, confidence, accuracy, tuple(bins))


# --- live quality per segment (joiner writes, rollout and joiner read) -----------------

SEGMENT_OTHER = "other"
"""The value of a segment that holds what is not kept apart: categorical values past
the segment's cap (or outside its listed values)."""
SEGMENT_MISSING = "missing"
"""The value of a segment when the prediction has no usable value for its feature."""
_SEGMENT_SEP = "|"


def segment_fields(task: str, binary: bool, output: float, label: float) -> dict[str, float]:
    """The counter increments one scored prediction adds to its segment value.

    Classification: count and correct (accuracy); binary classification also the
    positive predictions, positive labels and true positives, from which precision,
    recall (the true-positive rate) and the positive rate follow. Regression: count
    and absolute error (MAE).
    """
    fields: dict[str, float] = {"count": 1.0}
    if task == "classification":
        fields["correct"] = 1.0 if int(output) == int(label) else 0.0
        if binary:
            predicted, actual = int(output) == 1, int(label) == 1
            fields["predicted_positive"] = 1.0 if predicted else 0.0
            fields["label_positive"] = 1.0 if actual else 0.0
            fields["true_positive"] = 1.0 if predicted and actual else 0.0
    else:
        fields["abs_error"] = abs(output - label)
    return fields


def segment_field(value: str, field: str) -> str:
    """The hash field of one counter of one segment value (`<value>|<field>`)."""
    return f"{value}{_SEGMENT_SEP}{field}"


def split_segment_fields(totals: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """`{"FR|count": 3, ...}` -> `{"FR": {"count": 3, ...}}` (a value may hold `|`)."""
    out: dict[str, dict[str, float]] = {}
    for name, total in totals.items():
        value, _, field = name.rpartition(_SEGMENT_SEP)
        out.setdefault(value, {})[field] = total
    return out


def _ratio(a: float, b: float) -> float | None:
    return min(1.0, a / b) if b > 0 else None


@dataclass(frozen=True)
class SegmentStats:
    """Live quality of one segment value of one model version over a window."""

    count: float = 0.0
    correct: float = 0.0
    abs_error: float = 0.0
    predicted_positive: float = 0.0
    label_positive: float = 0.0
    true_positive: float = 0.0

    @classmethod
    def from_fields(cls, f: Mapping[str, float]) -> SegmentStats:
        return cls(**{name: f.get(name, 0.0) for name in cls.__dataclass_fields__})

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.correct, self.count)

    @property
    def mae(self) -> float | None:
        return self.abs_error / self.count if self.count > 0 else None

    @property
    def positive_rate(self) -> float | None:
        """Share of predictions that are positive (demographic parity compares these)."""
        return _ratio(self.predicted_positive, self.count)

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_positive, self.predicted_positive)

    @property
    def recall(self) -> float | None:
        """The true-positive rate (equal opportunity compares these)."""
        return _ratio(self.true_positive, self.label_positive)


class QualityStore:
    def __init__(self, namespace: str, name: str) -> None:
        self.prefix = model_prefix(namespace, name)

    def segment(self, version: str, variant: str, segment: str) -> WindowedCounters:
        """Live quality of every value of one segment: fields `<value>|<field>`."""
        return WindowedCounters(f"{self.prefix}:segment:{version}:{variant}:{segment}")

    def segment_values_key(self, segment: str) -> str:
        """The set of the segment's values kept apart (first seen, up to its cap)."""
        return f"{self.prefix}:segment-values:{segment}"

    def read_segment(
        self,
        client: Any,
        version: str,
        variant: str,
        segment: str,
        window_seconds: float,
        now: float | None = None,
    ) -> dict[str, SegmentStats]:
        """Each value's live quality over the last `window_seconds`."""
        totals = self.segment(version, variant, segment).read(client, window_seconds, now)
        return {
            value: SegmentStats.from_fields(f) for value, f in split_segment_fields(totals).items()
        }

    def counters(self, version: str, variant: str) -> WindowedCounters:
        return WindowedCounters(f"{self.prefix}:quality:{version}:{variant}")

    def agreement(self, stable: str, candidate: str) -> WindowedCounters:
        return WindowedCounters(f"{self.prefix}:agreement:{stable}:{candidate}")

    def read(self, client: Any, version: str, variant: str, window_seconds: float) -> QualityStats:
        return QualityStats.from_fields(
            self.counters(version, variant).read(client, window_seconds)
        )

    def read_agreement(
        self, client: Any, stable: str, candidate: str, window_seconds: float
    ) -> tuple[int, int]:
        """(requests compared, requests where both versions gave the same output)."""
        f = self.agreement(stable, candidate).read(client, window_seconds)
        return int(f.get("compared", 0)), int(f.get("agreed", 0))


# --- serving stats (inference writes, rollout reads) -----------------------------------


@dataclass(frozen=True)
class ServingStats:
    requests: int
    errors: int
    latency_counts: tuple[int, ...]  # per LATENCY_BUCKETS_MS bound, not cumulative

    @classmethod
    def from_fields(cls, f: Mapping[str, float]) -> ServingStats:
        return cls(
            requests=int(f.get("requests", 0)),
            errors=int(f.get("errors", 0)),
            latency_counts=tuple(int(f.get(f"le_{i}", 0)) for i in range(len(LATENCY_BUCKETS_MS))),
        )

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def quantile_ms(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (conservative)."""
        total = sum(self.latency_counts)
        if not total:
            return None
        rank = q * total
        seen = 0
        for bound, n in zip(LATENCY_BUCKETS_MS, self.latency_counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return math.inf


def latency_bucket(ms: float) -> int:
    """Index of the first bucket whose bound is >= ms."""
    for i, bound in enumerate(LATENCY_BUCKETS_MS):
        if ms <= bound:
            return i
    return len(LATENCY_BUCKETS_MS) - 1


class ServingStore:
    def __init__(self, namespace: str, name: str) -> None:
        self.prefix = model_prefix(namespace, name)

    def counters(self, version: str, variant: str) -> WindowedCounters:
        return WindowedCounters(f"{self.prefix}:serving:{version}:{variant}")

    def read(self, client: Any, version: str, variant: str, window_seconds: float) -> ServingStats:
        return ServingStats.from_fields(
            self.counters(version, variant).read(client, window_seconds)
        )


def drift_key(namespace: str, name: str) -> str:
    return f"{model_prefix(namespace, name)}:drift:last"


@dataclass(frozen=True)
class AccuracyEstimate:
    """One version's accuracy estimated from confidence, before labels (drift monitor)."""

    accuracy: float
    rows: int
    """The predictions the estimate is made of."""
    at: float
    """Wall-clock time of the estimate (seconds since the epoch)."""


class EstimateStore:
    """The drift monitor's latest accuracy estimate per version, for the rollout."""

    def __init__(self, namespace: str, name: str) -> None:
        self.key = f"{model_prefix(namespace, name)}:drift:estimate"

    def write(self, client: Any, version: str, estimate: AccuracyEstimate) -> None:
        body = {"accuracy": estimate.accuracy, "rows": estimate.rows, "at": estimate.at}
        client.hset(self.key, version, json.dumps(body))

    def forget(self, client: Any, version: str) -> None:
        client.hdel(self.key, version)

    def read(self, client: Any) -> dict[str, AccuracyEstimate]:
        """Every version's estimate; an unreadable entry is left out."""
        out = {}
        for version, body in (client.hgetall(self.key) or {}).items():
            try:
                d = json.loads(body)
                estimate = AccuracyEstimate(float(d["accuracy"]), int(d["rows"]), float(d["at"]))
            except (ValueError, KeyError, TypeError):
                continue
            key = version.decode() if isinstance(version, bytes) else str(version)
            out[key] = estimate
        return out


def drift_reference_key(namespace: str, name: str) -> str:
    """Text: where the drift monitor's reference comes from (status.drift.reference)."""
    return f"{model_prefix(namespace, name)}:drift:reference"


def rollout_key(namespace: str, name: str) -> str:
    """The rollout controller's state: stage, weight, versions, last analysis, history."""
    return f"{model_prefix(namespace, name)}:rollout"


def rollout_command_key(namespace: str, name: str) -> str:
    """An approve/abort request waiting for the rollout controller's next tick."""
    return f"{model_prefix(namespace, name)}:rollout:command"
