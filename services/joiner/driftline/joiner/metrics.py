"""The joiner's Prometheus metrics: names as constants, and the metric objects.

Live quality is exported with the same fields the rollout controller reads from
Redis (`driftline.common.redis_state.quality_fields`), one counter family with a `field`
label, so a dashboard computes accuracy as
`rate(..{field="correct"}[5m]) / rate(..{field="count"}[5m])` summed over replicas.
A join is counted here only when its Redis marker was newly set, so a replayed
batch never counts twice in one process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_TOTAL = "driftline_joiner_messages_total"
"""Counter{side, result}: predictions and outcomes read, by what became of them:
new, duplicate, late (after the join window), invalid (dead-lettered)."""

LABELED_TOTAL = "driftline_joiner_labeled_examples_total"
"""Counter: labeled examples emitted (one per request id)."""

QUALITY_TOTAL = "driftline_joiner_quality_total"
"""Counter{version, variant, field}: live quality sums (count, correct, abs_error,
sq_error, log_loss, log_loss_count) of the predictions joined with their outcome.
The confidence bins (`cal<bin>_*`) stay in Redis; CALIBRATION_ERROR sums them up.
Rows the exploration policy answered count under `variant="explored"` (the model's
own answer against the outcome), apart from the exploited `stable` and `candidate`."""

AGREEMENT_TOTAL = "driftline_joiner_agreement_total"
"""Counter{stable, candidate, field}: shadow agreement (compared, agreed)."""

EXPIRED_TOTAL = "driftline_joiner_expired_total"
"""Counter{side}: predictions that never met their outcome within the window, and
outcomes whose served prediction never arrived."""

PENDING_REQUESTS = "driftline_joiner_pending_requests"
"""Gauge: request ids waiting for their other side (all replicas, read from Redis)."""

BATCH_SECONDS = "driftline_joiner_batch_seconds"
"""Histogram: time to join one consumed batch, from decode to committed offsets."""

OUTCOME_AGGREGATES_TOTAL = "driftline_joiner_outcome_aggregate_updates_total"
"""Counter{result}: labels added to per-entity outcome aggregates (features with
source.aggregate.of: outcome), or lost because Redis failed (at most once)."""

RECOVERED_TOTAL = "driftline_joiner_recovered_examples_total"
"""Counter{result}: examples found in an outbox after a crash or a failed send:
`resent` (missing from the labeled topic) or `present` (already there)."""

SEGMENT_QUALITY_TOTAL = "driftline_joiner_segment_quality_total"
"""Counter{version, variant, segment, value, field}: live quality sums per group of
each `spec.monitoring.segments` entry: count, correct (classification), abs_error
(regression), and for binary classification predicted_positive, label_positive and
true_positive. `value` is bounded: bins, listed values or the first `maxValues`,
then `other` (and `missing`)."""

SEGMENT_FOLDED_TOTAL = "driftline_joiner_segment_folded_total"
"""Counter{segment}: scored predictions counted as `other` because the segment
already keeps `maxValues` values apart."""

CALIBRATION_ERROR = "driftline_joiner_calibration_error"
"""Gauge{version}: expected calibration error (ten confidence bins) of the version's
labeled predictions over `monitoring.calibration.windowSeconds`, once it has
`minSamples` of them, read from Redis (all replicas)."""

CONFIDENCE_GAP = "driftline_joiner_confidence_gap"
"""Gauge{version}: mean confidence minus accuracy over the same window (above 0: the
model is surer than it is right)."""

CALIBRATION_LIMIT = "driftline_joiner_calibration_limit"
"""Gauge: the spec's `monitoring.calibration.maxError`."""

FAIRNESS_PARITY_GAP = "driftline_joiner_fairness_parity_gap"
"""Gauge{version, segment}: demographic parity difference of a protected segment
(largest minus smallest positive-prediction rate among its values) over
`monitoring.fairness.windowSeconds`, read from Redis (all replicas)."""

FAIRNESS_OPPORTUNITY_GAP = "driftline_joiner_fairness_opportunity_gap"
"""Gauge{version, segment}: equal-opportunity difference (largest minus smallest
true-positive rate among its values), as above."""

FAIRNESS_LIMIT = "driftline_joiner_fairness_limit"
"""Gauge{segment, figure}: the spec's limit for each protected segment's gap
(`figure`: parity, opportunity), so that alert rules compare with the spec."""

RETRIES_TOTAL = "driftline_joiner_batch_retries_total"
"""Counter{cause}: batches retried because Redis or the broker failed."""

CONSUMER_RESTARTS_TOTAL = "driftline_joiner_consumer_restarts_total"
"""Counter: consumers started afresh because a partition stood still behind its end
for `DRIFTLINE_JOINER_STALL_SECONDS` (a client stuck after a rebalance, see
`driftline.joiner.stall`)."""

messages = Counter(MESSAGES_TOTAL, "Predictions and outcomes read.", ["side", "result"])
labeled = Counter(LABELED_TOTAL, "Labeled examples emitted.")
quality = Counter(
    QUALITY_TOTAL, "Live quality sums per model version.", ["version", "variant", "field"]
)
agreement = Counter(
    AGREEMENT_TOTAL,
    "Shadow agreement between stable and candidate.",
    ["stable", "candidate", "field"],
)
expired = Counter(EXPIRED_TOTAL, "Requests that expired unjoined.", ["side"])
pending = Gauge(PENDING_REQUESTS, "Request ids waiting for their other side.")
batch_seconds = Histogram(
    BATCH_SECONDS,
    "Time to join one consumed batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
outcome_aggregates = Counter(
    OUTCOME_AGGREGATES_TOTAL, "Labels added to per-entity outcome aggregates.", ["result"]
)
recovered = Counter(RECOVERED_TOTAL, "Examples found in an outbox on recovery.", ["result"])
retries = Counter(RETRIES_TOTAL, "Batches retried after a failure.", ["cause"])
consumer_restarts = Counter(
    CONSUMER_RESTARTS_TOTAL, "Consumers started afresh after standing still behind the end."
)
segment_quality = Counter(
    SEGMENT_QUALITY_TOTAL,
    "Live quality sums per model version and segment group.",
    ["version", "variant", "segment", "value", "field"],
)
segment_folded = Counter(
    SEGMENT_FOLDED_TOTAL, "Scored predictions counted as 'other' past a segment's cap.", ["segment"]
)
calibration_error = Gauge(
    CALIBRATION_ERROR, "Expected calibration error of the labeled predictions.", ["version"]
)
confidence_gap = Gauge(CONFIDENCE_GAP, "Mean confidence minus accuracy.", ["version"])
calibration_limit = Gauge(CALIBRATION_LIMIT, "The spec's limit for the calibration error.")
parity_gap = Gauge(
    FAIRNESS_PARITY_GAP,
    "Positive-rate gap between a protected segment's values.",
    ["version", "segment"],
)
opportunity_gap = Gauge(
    FAIRNESS_OPPORTUNITY_GAP,
    "True-positive-rate gap between a protected segment's values.",
    ["version", "segment"],
)
fairness_limit = Gauge(
    FAIRNESS_LIMIT, "The spec's limit for a fairness gap.", ["segment", "figure"]
)
